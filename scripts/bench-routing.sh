#!/usr/bin/env bash
# Routing benchmark (issue: routing, discovery and releases). Reproduce with `make bench-routing`.
#
# Runs Berth in-process (release build) with its registry, workers and router (Debian's HAProxy) on a
# real 1 + 1 local cluster and measures, in one run: route propagation (new task running → serving
# through the router, p50/p95), throughput to one task through the router against straight to the
# task and against a hand-written static HAProxy (wrk), and failed requests during rolling updates
# through the router against a static configuration. Knobs: TRIALS (20), ROUNDS (3), WRK_SECS (5),
# RATE (200).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p berth-tests --bin bench-routing
exec cargo run --release -q -p berth-tests --bin bench-routing
