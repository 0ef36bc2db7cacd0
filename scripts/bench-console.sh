#!/usr/bin/env bash
# Console benchmark (issue: the web console). Reproduce with `make bench-console`.
#
# Builds the release console (wasm-opt included) and runs Berth in-process with it, its registry and
# workers, driving Debian's Chromium: the first load's transferred size, warm navigation to the
# dashboard's data against the API docs page's first paint from the same server, and a 200-service
# application scrolled quiet and during live updates, the browser on a core of its own. Knobs: RUNS (20),
# SCROLL_FRAMES (600), LIVE_ROUNDS (3), BROWSER_CPU (0; `shared` for no separate core).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-console.sh
cargo build --release -q -p berth-tests --bin bench-console
exec cargo run --release -q -p berth-tests --bin bench-console
