#!/usr/bin/env bash
# API load benchmark (issue: foundation). Reproduce with `make bench`.
#
# Starts a release build of `berth serve` on its embedded PostgreSQL in a temporary data directory,
# creates a tenant with 100 templates, then drives it with wrk on loopback at 1, 16 and 64 connections:
#   GET /healthz                        the ceiling of the HTTP stack itself (no auth, no database)
#   GET /api/v1/templates?limit=100     authenticated list returning 100 rows
#   GET /api/v1/me                      authentication alone (one indexed lookup), to split the cost
#   POST /api/v1/templates              authenticated create (2 rows + an audit entry per request)
# Every run is bounded (BENCH_SECONDS each, default 5). Prints a Markdown table and the server's peak RSS,
# then the read path against pgbench running the same statements (see the end of this script).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-5}
PORT=${BENCH_PORT:-18090}
BASE="http://127.0.0.1:$PORT"
DATA=$(mktemp -d /tmp/berth-bench-XXXXXX)
chmod 755 "$DATA"
SERVER_PID=""

cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT
trap "exit 130" INT TERM

. scripts/bench-common.sh
[ -n "${BERTH_BIN:-}" ] || cargo build --release -q -p berth
start_berth

ADMIN=$(login bench@berth.test bench-password)
curl -sf "$BASE/api/v1/admin/tenants" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"Bench","owner_email":"owner@bench.test","owner_password":"owner-password"}' >/dev/null
TOKEN=$(login owner@bench.test owner-password)
COMPOSE='services:\n  web:\n    image: busybox:1\n    deploy:\n      replicas: 2\n'
for i in $(seq -w 1 100); do
  curl -sf "$BASE/api/v1/templates" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"name\":\"seed-$i\",\"compose\":\"$COMPOSE\"}" >/dev/null
done
COUNT=$(curl -sf "$BASE/api/v1/templates?limit=100" -H "authorization: Bearer $TOKEN" | json "['items'].__len__()")
[ "$COUNT" = 100 ] || { echo "expected 100 templates, got $COUNT"; exit 1; }

cat >"$DATA/create.lua" <<LUA
-- Each wrk thread has its own Lua state: number the threads so every created name is unique.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
local compose = [["$COMPOSE"]]
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $TOKEN"
request = function()
  counter = counter + 1
  local body = '{"name":"b-$RANDOM-' .. tostring(tid) .. '-' .. counter .. '","compose":' .. compose .. '}'
  return wrk.format(nil, "/api/v1/templates", nil, body)
end
LUA
cat >"$DATA/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.2f %.2f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests, errors))
end
LUA
cat "$DATA/report.lua" >>"$DATA/create.lua"
printf 'wrk.headers["authorization"] = "Bearer %s"\n' "$TOKEN" >"$DATA/list.lua"
cat "$DATA/report.lua" >>"$DATA/list.lua"

run() { # name connections script url
  local threads=$(( $2 < 2 ? 1 : 2 ))
  local line
  line=$(wrk -t"$threads" -c"$2" -d"${SECS}s" --timeout 5s -s "$3" "$4" | grep '^RESULT')
  read -r _ rps p50 p99 total errors <<<"$line"
  printf '| %-28s | %3d | %9s | %8s | %8s | %6s |\n' "$1" "$2" "$rps" "$p50" "$p99" "$errors"
  echo "$1 $2 $rps" >>"$DATA/rps"
}

echo
echo "wrk on loopback, ${SECS}s per run, $(nproc) cores shared by wrk, berth and postgres"
echo
echo "| endpoint                     |   c |     req/s | p50 (ms) | p99 (ms) | errors |"
echo "|------------------------------|-----|-----------|----------|----------|--------|"
for c in 1 16 64; do
  run "GET /healthz" "$c" "$DATA/report.lua" "$BASE/healthz"
  run "GET /api/v1/me (auth only)" "$c" "$DATA/list.lua" "$BASE/api/v1/me"
  run "GET /api/v1/templates (100)" "$c" "$DATA/list.lua" "$BASE/api/v1/templates?limit=100"
done
# The read path against the database's own ceiling, measured before the create runs grow the table:
# pgbench runs the statements an authenticated 100-row list sends (the caller's row, then the page) on
# the same embedded server, at the same concurrency, with no HTTP in between (the page's column list is
# SELECT_TEMPLATE's in backend/berth/src/applications/templates.rs: keep them in step). A second pair of runs prices row-level security:
# the page alone as Berth's tenant role under the policies (with the tenant set per transaction, as
# the tenant pool does per connection taken) against the page alone as the table owner.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
PSQL="$PGBIN/psql -h $DATA/run -U berth -d berth -Atq"
read -r USER_ID TENANT_ID <<<"$($PSQL -F ' ' -c "SELECT id, tenant_id FROM users WHERE email = 'owner@bench.test'")"
cat >"$DATA/read-path.sql" <<SQL
SELECT u.email, u.role, u.tenant_id, t.status AS tenant_status FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id WHERE u.id = '$USER_ID';
SELECT t.id, t.name, t.description, t.latest_version, v.compose, v.files, v.variables, v.services, v.warnings, t.created_at, t.updated_at
  FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.latest_version
 WHERE t.tenant_id = '$TENANT_ID' AND (NULL::uuid IS NULL OR t.id > NULL::uuid) ORDER BY t.id LIMIT 101;
SQL
{ echo "SELECT set_config('berth.tenant_id', '$TENANT_ID', false);"; sed -n '2,$p' "$DATA/read-path.sql"; } >"$DATA/page.sql"
pgb() { # protocol script [PGOPTIONS]
  PGOPTIONS="${3:-}" "$PGBIN/pgbench" -h "$DATA/run" -U berth -n -M "$1" -c 16 -j 2 -T "$SECS" -f "$2" berth 2>/dev/null |
    awk '/^tps/ {print int($3)}'
}
# The ratio is taken over READ_ROUNDS rounds (default 5), each a list run right before a pgbench run, so
# both sides of a round meet the same load from whatever else shares this machine; single runs of
# either side vary by 10% from minute to minute here.
ROUNDS=${READ_ROUNDS:-5}
: >"$DATA/rounds"
for _ in $(seq 1 "$ROUNDS"); do
  line=$(wrk -t2 -c16 -d"${SECS}s" --timeout 5s -s "$DATA/list.lua" "$BASE/api/v1/templates?limit=100" | grep '^RESULT')
  read -r _ list _ <<<"$line"
  echo "$list $(pgb simple "$DATA/read-path.sql")" >>"$DATA/rounds"
done
PG_PREPARED=$(pgb prepared "$DATA/read-path.sql")
PAGE_OWNER=$(pgb prepared "$DATA/page.sql")
PAGE_RLS=$(pgb prepared "$DATA/page.sql" "-c role=berth_tenant")
# Medians of the rounds; the ratio is the median of the rounds' own ratios.
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
LIST16=$(awk '{print $1}' "$DATA/rounds" | median)
PG_SIMPLE=$(awk '{print $2}' "$DATA/rounds" | median)
RATIO=$(awk '{printf "%.3f\n", $1/$2}' "$DATA/rounds" | median)

for c in 1 16 64; do
  sed "s/b-[0-9]*-/b-c$c-/" "$DATA/create.lua" >"$DATA/create-$c.lua"
  run "POST /api/v1/templates" "$c" "$DATA/create-$c.lua" "$BASE/api/v1/templates"
done
echo
for c in 1 16 64; do
  h=$(awk -v c="$c" '$1=="GET" && $2=="/healthz" && $3==c {print $4}' "$DATA/rps")
  l=$(awk -v c="$c" '$2=="/api/v1/templates" && $3=="(100)" && $4==c {print $5}' "$DATA/rps")
  python3 -c "print(f'list / healthz at c=$c: {$l/$h:.1%}')"
done
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER_PID/status)"
echo
echo "| round | berth list, c=16 (req/s) | pgbench simple, c=16 (tx/s) | ratio |"
echo "|-------|--------------------------|-----------------------------|-------|"
awk '{printf "| %5d | %24s | %27s | %5.2f |\n", NR, $1, $2, $1/$2}' "$DATA/rounds"
echo
echo "| read path at 16 clients (medians of the rounds above)    | per second |"
echo "|----------------------------------------------------------|------------|"
printf '| %-56s | %10s |\n' "berth: GET /api/v1/templates?limit=100 (req/s)" "$LIST16"
printf '| %-56s | %10s |\n' "pgbench, caller's row + page, simple protocol (tx/s)" "$PG_SIMPLE"
printf '| %-56s | %10s |\n' "pgbench, caller's row + page, prepared (tx/s)" "$PG_PREPARED"
printf '| %-56s | %10s |\n' "pgbench, scope + page as the table owner, no RLS (tx/s)" "$PAGE_OWNER"
printf '| %-56s | %10s |\n' "pgbench, scope + page as berth_tenant under RLS (tx/s)" "$PAGE_RLS"
python3 -c "print(f'berth list / pgbench (simple protocol), median of the rounds: {$RATIO:.2f}'); print(f'berth list / pgbench (prepared): {$LIST16/$PG_PREPARED:.2f}'); print(f'page under RLS / page as owner: {$PAGE_RLS/$PAGE_OWNER:.2f}')"
