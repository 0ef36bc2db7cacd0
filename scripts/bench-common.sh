# Shared by the benchmark scripts (sourced, not run): starting a release `berth serve` on its embedded
# PostgreSQL and talking to it. Expects DATA (a fresh data directory), PORT and BASE to be set.

# Starts the server with any extra VAR=value settings given, sets SERVER_PID, waits until it is ready.
# BERTH_BIN runs another build instead of ./target/release/berth (to compare two builds in turn).
start_berth() {
  env BERTH_ROUTER=off "$@" BERTH_DATA_DIR="$DATA" BERTH_LISTEN="127.0.0.1:$PORT" BERTH_ADMIN_EMAIL=bench@berth.test \
    BERTH_ADMIN_PASSWORD=bench-password RUST_LOG="${RUST_LOG:-warn}" "${BERTH_BIN:-./target/release/berth}" serve >"$DATA/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    curl -sf "$BASE/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server did not start"
  cat "$DATA/server.log"
  exit 1
}

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
login() { curl -sf "$BASE/api/v1/auth/login" -H 'content-type: application/json' -d "{\"email\":\"$1\",\"password\":\"$2\"}" | json "['access_token']"; }
