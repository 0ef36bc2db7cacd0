#!/usr/bin/env bash
# Cluster benchmarks (issue: clusters on real Swarm). Reproduce with `make bench-clusters` (as root).
#
# 1. Time from `POST /api/v1/clusters` (1 manager + 2 workers, local provider) to `ready`, against a
#    shell script doing the same steps by hand on the same machine in the same run: a bridge, three
#    network namespaces with veths, three dockerds (started together), `swarm init`, two joins, until
#    `docker node ls` shows three Ready nodes. Alternating runs, ROUNDS each (default 3); medians.
# 2. Berth's CPU and memory while reconciling 10 idle one-node clusters for IDLE_SECONDS (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
IDLE_SECONDS=${IDLE_SECONDS:-60}
PORT=${BENCH_PORT:-18091}
BASE="http://127.0.0.1:$PORT"
DATA=$(mktemp -d /tmp/berth-bench-clusters-XXXXXX)
chmod 755 "$DATA"
HAND="$DATA/hand"
SERVER_PID=""
NET=250 # the by-hand swarm's network number (Berth's clusters take the lowest free ones)

teardown_by_hand() {
  for i in 1 2 3; do
    ns="benchhand-$i"
    if [ -e "/run/netns/$ns" ]; then
      ino=$(stat -L -c %i "/run/netns/$ns")
      for p in /proc/[0-9]*; do
        [ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$ino" ] && kill -9 "${p#/proc/}" 2>/dev/null || true
      done
      sleep 0.3
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  ip link del benchhand-br 2>/dev/null || true
  rm -rf "$HAND"
}

cleanup() {
  teardown_by_hand
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  # Anything Berth left (it should have deleted every cluster itself).
  if [ -d "$DATA/berth/nodes" ] && [ -n "$(ls "$DATA/berth/nodes")" ]; then
    echo "warning: Berth left nodes behind: $(ls "$DATA/berth/nodes")" >&2
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT
trap "exit 130" INT TERM

now() { date +%s.%N; }

# Polls a command until it succeeds; gives up (failing the benchmark) after 120 s.
until_ok() {
  local deadline=$(( $(date +%s) + 120 ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for: $*" >&2; exit 1; }
    sleep 0.05
  done
}

three_ready() { [ "$(docker -H "unix://$HAND/1/docker.sock" node ls --format '{{.Status}}' | grep -c Ready)" = 3 ]; }

by_hand() {
  mkdir -p "$HAND"
  ip link add benchhand-br type bridge
  ip addr add 10.213.$NET.1/24 dev benchhand-br
  ip link set benchhand-br up
  for i in 1 2 3; do
    ns="benchhand-$i"; d="$HAND/$i"; mkdir -p "$d/data" "$d/exec"
    ip netns add "$ns"
    ip link add "bh$i" type veth peer name eth0 netns "$ns"
    ip link set "bh$i" master benchhand-br up
    ip -n "$ns" addr add "10.213.$NET.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up; ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "10.213.$NET.1"
    echo "nameserver 127.0.0.1" > "$d/resolv.conf"
    setsid -f nsenter --net="/run/netns/$ns" unshare --mount --uts --pid --fork --mount-proc \
      sh -c "hostname hand-$i && mount --bind $d/resolv.conf /etc/resolv.conf && exec dockerd --data-root $d/data --exec-root $d/exec --pidfile $d/exec/docker.pid -H unix://$d/docker.sock" \
      >"$d/dockerd.log" 2>&1
  done
  for i in 1 2 3; do
    until_ok docker -H "unix://$HAND/$i/docker.sock" info
  done
  docker -H "unix://$HAND/1/docker.sock" swarm init --advertise-addr "10.213.$NET.11" >/dev/null
  token=$(docker -H "unix://$HAND/1/docker.sock" swarm join-token -q worker)
  local joins=()
  for i in 2 3; do
    docker -H "unix://$HAND/$i/docker.sock" swarm join --token "$token" "10.213.$NET.11:2377" >/dev/null &
    joins+=($!)
  done
  wait "${joins[@]}"
  until_ok three_ready
}

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
api() { curl -sf "$@" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json'; }
has_status() { [ "$(api "$BASE/api/v1/clusters/$1" | json "d['status']")" = "$2" ]; }
is_gone() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/v1/clusters/$1" -H "authorization: Bearer $TOKEN")" = 404 ]; }
wait_status() { until_ok has_status "$1" "$2"; }
wait_gone() { until_ok is_gone "$1"; }

cargo build --release -q -p berth
mkdir -p "$DATA/berth"
BERTH_ROUTER=off BERTH_DATA_DIR="$DATA/berth" BERTH_LISTEN="127.0.0.1:$PORT" BERTH_ADMIN_EMAIL=bench@berth.test \
  BERTH_ADMIN_PASSWORD=bench-password RUST_LOG=warn ./target/release/berth serve >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
until_ok curl -sf "$BASE/readyz"
login() { curl -sf "$BASE/api/v1/auth/login" -H 'content-type: application/json' -d "{\"email\":\"$1\",\"password\":\"$2\"}" | json "d['access_token']"; }
ADMIN=$(login bench@berth.test bench-password)
curl -sf "$BASE/api/v1/admin/tenants" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"Bench","owner_email":"owner@bench.test","owner_password":"owner-password"}' >/dev/null
TOKEN=$(login owner@bench.test owner-password)

hand_times=(); berth_times=()
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now); by_hand; t1=$(now); teardown_by_hand
  hand_times+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now)
  id=$(api "$BASE/api/v1/clusters" -d "{\"name\":\"bench-$r\",\"managers\":1,\"workers\":2}" | json "d['id']")
  wait_status "$id" ready
  t1=$(now)
  berth_times+=("$(echo "$t1 - $t0" | bc)")
  api -X DELETE "$BASE/api/v1/clusters/$id" >/dev/null; wait_gone "$id"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mh=$(median "${hand_times[@]}"); mb=$(median "${berth_times[@]}")
echo
echo "## 1 manager + 2 workers, POST to ready ($ROUNDS rounds each, alternating)"
echo "by hand (shell): ${hand_times[*]} s  -> median $mh s"
echo "Berth (API):     ${berth_times[*]} s  -> median $mb s"
python3 -c "print(f'ratio Berth / by hand: {$mb/$mh:.2f}')"

echo
echo "## reconciling 10 idle one-node clusters for ${IDLE_SECONDS}s"
ids=()
for i in $(seq 1 10); do
  ids+=("$(api "$BASE/api/v1/clusters" -d "{\"name\":\"idle-$i\",\"managers\":1,\"workers\":0}" | json "d['id']")")
done
for id in "${ids[@]}"; do wait_status "$id" ready; done
sleep 5 # let reconcilers take their leases and settle
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
c0=$(cpu); sleep "$IDLE_SECONDS"; c1=$(cpu)
python3 -c "t=($c1-$c0)/$ticks; print(f'berth CPU: {t:.2f} s in ${IDLE_SECONDS} s = {100*t/$IDLE_SECONDS:.2f}% of one core')"
echo "berth RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$SERVER_PID/status) (peak $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER_PID/status))"
for id in "${ids[@]}"; do api -X DELETE "$BASE/api/v1/clusters/$id" >/dev/null; done
for id in "${ids[@]}"; do wait_gone "$id"; done
