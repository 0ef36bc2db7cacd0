#!/usr/bin/env bash
# Event fan-out benchmark (issue: control-plane hardening). Reproduce with `make bench-events`.
#
# For each delivery mode — `poll` (every stream polls the table every 500 ms: the design before the
# fan-out) and `listen` (one LISTEN per process feeding every stream) — starts a release `berth serve`
# on its embedded PostgreSQL, opens STREAMS event streams (default 1000) for one tenant, measures what
# the idle streams cost (database transactions per second, server memory), then commits EVENTS events
# (default 20, GAP_MS apart) and measures the time from each commit to its arrival on every stream.
# Both modes run in the same invocation on the same machine, so compare them as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS=${STREAMS:-1000}
EVENTS=${EVENTS:-20}
GAP_MS=${GAP_MS:-250}
PORT=${BENCH_PORT:-18091}
BASE="http://127.0.0.1:$PORT"
DATA=""
SERVER_PID=""
ulimit -n 8192

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
  [ -n "$DATA" ] && rm -rf "$DATA"
  DATA=""
}
trap stop_server EXIT
trap "exit 130" INT TERM

cargo build --release -q -p berth -p berth-tests --bin berth --bin bench-events

. scripts/bench-common.sh

echo
echo "$STREAMS streams on one process, $EVENTS events ${GAP_MS} ms apart, $(nproc) cores shared by client, berth and postgres"
echo
echo "| delivery | streams | delivered       | p50 (ms) | p95 (ms) | max (ms) | idle tx/s | RSS MiB before | RSS MiB with streams | KiB/stream |"
echo "|----------|---------|-----------------|----------|----------|----------|-----------|----------------|----------------------|------------|"
for mode in poll listen; do
  DATA=$(mktemp -d /tmp/berth-bench-events-XXXXXX)
  chmod 755 "$DATA"
  start_berth BERTH_EVENT_DELIVERY=$mode
  ADMIN=$(login bench@berth.test bench-password)
  TENANT=$(curl -sf "$BASE/api/v1/admin/tenants" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
    -d '{"name":"Bench","owner_email":"owner@bench.test","owner_password":"owner-password"}' | json "['id']")
  TOKEN=$(login owner@bench.test owner-password)
  # The embedded database's socket directory (a data directory under /tmp is reachable by postgres).
  SOCKET="$DATA/run"
  ./target/release/bench-events "$BASE" "$TOKEN" "$TENANT" "$SOCKET" "$SERVER_PID" "$mode" "$STREAMS" "$EVENTS" "$GAP_MS"
  stop_server
done
