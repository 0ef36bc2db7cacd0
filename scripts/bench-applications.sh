#!/usr/bin/env bash
# Applications benchmark (issue: applications on Swarm). Reproduce with `make bench-applications`.
#
# Starts Berth in-process (release build) with its built-in registry and job workers, makes a real
# 1 + 1 local cluster, and measures Berth against the Docker tools on that same cluster in one run:
# deploy latency against `docker stack deploy`, a 10-replica rolling update against `docker service
# update --image`, listing 200 services against the engine's own `GET /services`, and how soon a killed
# task shows in the API. Knobs: READ_SECS (5), CONCURRENCY (8), KILLS (20).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p berth -p berth-tests --bin berth --bin bench-applications
exec cargo run --release -q -p berth-tests --bin bench-applications
