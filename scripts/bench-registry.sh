#!/usr/bin/env bash
# Registry benchmarks (issue: images). Reproduce with `make bench-registry` (as root).
#
# Against the same `docker-registry` binary run bare (no auth, no notifications, TLS with the same
# certificate, storage on the same disk), in the same run, alternating which goes first:
# 1. `docker push` of a ~200 MB image of 5 layers from a node engine of a local cluster, through
#    Berth's registry (token auth, TLS, notifications) and to the bare one. ROUNDS rounds (default 3),
#    each with a freshly built image (new random layers), so nothing is already there; medians.
# 2. `POST /api/v1/images/import` of that image's `docker save` tarball (curl -T, streamed), against
#    `skopeo copy docker-archive:… docker://<bare>/…` (skopeo's defaults, which gzip the layers, and
#    with --dest-decompress, which sends them as they are, as Berth does; each into a bare registry of
#    its own, so skopeo's blob cache cannot reuse one run's blobs in the other).
# 3. The token endpoint: requests/s and p99 with 16 connections for 10 s (wrk), with an API token and
#    with an e-mail and password (the first check costs Argon2; later ones are remembered).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
LAYERS=${LAYERS:-5}
LAYER_MB=${LAYER_MB:-40}
PORT=${BENCH_PORT:-18092}
REG_PORT=${BENCH_REGISTRY_PORT:-15100}
BARE_PORT=$((REG_PORT + 10))
RAW_PORT=$((REG_PORT + 11))
IP=10.213.0.1
BASE="http://127.0.0.1:$PORT"
DATA=$(mktemp -d /tmp/berth-bench-registry-XXXXXX)
chmod 755 "$DATA"
SERVER_PID=""
BARE_PID=""
RAW_PID=""
CLUSTER=""

source scripts/bench-common.sh

cleanup() {
  if [ -n "$CLUSTER" ] && [ -n "${TOKEN:-}" ]; then
    curl -s -X DELETE "$BASE/api/v1/clusters/$CLUSTER" -H "authorization: Bearer $TOKEN" >/dev/null || true
    for _ in $(seq 1 300); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/v1/clusters/$CLUSTER" -H "authorization: Bearer $TOKEN")" = 404 ] && break
      sleep 0.2
    done
  fi
  for pid in "$BARE_PID" "$RAW_PID"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT
trap "exit 130" INT TERM

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
api() { curl -sf "$@" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json'; }
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

cargo build --release -q -p berth
mkdir -p "$DATA/berth"
# The import's own log line says where its time went (receiving the upload vs pushing to the registry).
RUST_LOG="warn,berth::registry::import=info" DATA="$DATA/berth" start_berth BERTH_REGISTRY_ADDRESS="$IP:$REG_PORT"
ADMIN=$(login bench@berth.test bench-password)
curl -sf "$BASE/api/v1/admin/tenants" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
  -d '{"name":"bench","owner_email":"owner@bench.test","owner_password":"owner-password"}' >/dev/null
TOKEN=$(login owner@bench.test owner-password)
API_TOKEN=$(api "$BASE/api/v1/tokens" -d '{"name":"bench","role":"developer"}' | jget "d['token']")
REG="$IP:$REG_PORT"
BARE="$IP:$BARE_PORT"
RAW="$IP:$RAW_PORT"

# A one-node cluster whose engine pushes.
CLUSTER=$(api "$BASE/api/v1/clusters" -d '{"name":"bench","managers":1,"workers":0}' | jget "d['id']")
for _ in $(seq 1 600); do
  [ "$(api "$BASE/api/v1/clusters/$CLUSTER" | jget "d['status']")" = ready ] && break
  sleep 0.2
done
CREDS="$DATA/creds"; mkdir -p "$CREDS" "$DATA/cli"
api "$BASE/api/v1/clusters/$CLUSTER/credentials" >"$DATA/creds.json"
for f in ca cert key; do jget "d['${f}_pem']" <"$DATA/creds.json" >"$CREDS/$f.pem"; done
ENGINE=$(jget "d['endpoint']" <"$DATA/creds.json")
d() { DOCKER_CERT_PATH="$CREDS" DOCKER_TLS_VERIFY=1 DOCKER_CONFIG="$DATA/cli" DOCKER_BUILDKIT=0 /usr/bin/docker -H "$ENGINE" "$@"; }

# The bare registry: same binary, same certificate, no auth, no notifications; the node trusts it the
# way it trusts Berth's (certs.d in its own /etc/docker).
CA=$(api "$BASE/api/v1/registries" | jget "d['items'][0]['ca_pem']")
for node in "$DATA"/berth/nodes/*/etc-docker; do
  mkdir -p "$node/certs.d/$BARE"; printf '%s\n' "$CA" >"$node/certs.d/$BARE/ca.crt"
done
mkdir -p "$DATA/skopeo-certs"; printf '%s\n' "$CA" >"$DATA/skopeo-certs/ca.crt"
bare_registry() { # name address
  mkdir -p "$DATA/$1"
  printf '%s\n' 'version: 0.1' 'log: {level: warn, accesslog: {disabled: true}}' \
    "storage: {filesystem: {rootdirectory: $DATA/$1/storage}, delete: {enabled: true}, cache: {blobdescriptor: inmemory}}" \
    "http: {addr: \"$2\", tls: {certificate: $DATA/berth/registry/tls/server.pem, key: $DATA/berth/registry/tls/server-key.pem}}" \
    >"$DATA/$1/config.yml"
  docker-registry serve "$DATA/$1/config.yml" >"$DATA/$1/log" 2>&1 &
}
bare_registry bare "$BARE"; BARE_PID=$!
# skopeo --dest-decompress gets a bare registry of its own: skopeo's blob cache (under
# /var/lib/containers for root) would otherwise let one skopeo run reuse the other's blobs.
bare_registry raw "$RAW"; RAW_PID=$!
sleep 1

echo "$API_TOKEN" | d login "$REG" -u bench --password-stdin >/dev/null

# A fresh image of $LAYERS random layers of $LAYER_MB MB each, built on the node as bench:$1.
build() {
  local ctx="$DATA/ctx"; rm -rf "$ctx"; mkdir -p "$ctx"
  { echo "FROM scratch"; for i in $(seq 1 "$LAYERS"); do echo "COPY layer$i /layer$i"; done; } >"$ctx/Dockerfile"
  for i in $(seq 1 "$LAYERS"); do head -c "$((LAYER_MB * 1024 * 1024))" /dev/urandom >"$ctx/layer$i"; done
  d build -q -t "bench:$1" "$ctx" >/dev/null
  rm -rf "$ctx"
}

push_bare=(); push_berth=(); imp_berth=(); imp_skopeo=(); imp_skopeo_raw=()
for r in $(seq 1 "$ROUNDS"); do
  build "$r"
  d tag "bench:$r" "$BARE/bench/img:$r"; d tag "bench:$r" "$REG/bench/img:$r"
  if [ $((r % 2)) = 1 ]; then order="bare berth"; else order="berth bare"; fi
  for who in $order; do
    if [ "$who" = bare ]; then
      t0=$(now); d push -q "$BARE/bench/img:$r" >/dev/null; push_bare+=("$(since "$t0")")
    else
      t0=$(now); d push -q "$REG/bench/img:$r" >/dev/null; push_berth+=("$(since "$t0")")
    fi
  done
  d save -o "$DATA/img.tar" "bench:$r"
  if [ $((r % 2)) = 1 ]; then order="skopeo berth raw"; else order="berth raw skopeo"; fi
  for who in $order; do
    t0=$(now)
    case $who in
      berth) curl -sf -X POST "$BASE/api/v1/images/import" -H "authorization: Bearer $TOKEN" \
               -H 'content-type: application/x-tar' -H 'Expect:' -T "$DATA/img.tar" >/dev/null
             imp_berth+=("$(since "$t0")") ;;
      skopeo) skopeo copy -q --dest-cert-dir "$DATA/skopeo-certs" "docker-archive:$DATA/img.tar" "docker://$BARE/bench/imp:$r" >/dev/null
              imp_skopeo+=("$(since "$t0")") ;;
      raw) skopeo copy -q --dest-decompress --dest-cert-dir "$DATA/skopeo-certs" "docker-archive:$DATA/img.tar" "docker://$RAW/bench/raw:$r" >/dev/null
           imp_skopeo_raw+=("$(since "$t0")") ;;
    esac
  done
  d rmi "bench:$r" "$BARE/bench/img:$r" "$REG/bench/img:$r" >/dev/null
  rm -f "$DATA/img.tar"
done

size_mb=$((LAYERS * LAYER_MB))
echo
echo "## docker push of a ${size_mb} MB image of $LAYERS layers ($ROUNDS rounds, alternating)"
echo "bare docker-registry:  ${push_bare[*]} s -> median $(median "${push_bare[@]}") s"
echo "Berth (token + TLS):   ${push_berth[*]} s -> median $(median "${push_berth[@]}") s"
python3 -c "print(f'ratio Berth / bare: {$(median "${push_berth[@]}")/$(median "${push_bare[@]}"):.2f}')"
echo
echo "## import of its docker save tarball"
echo "skopeo copy (gzip):          ${imp_skopeo[*]} s -> median $(median "${imp_skopeo[@]}") s"
echo "skopeo copy --dest-decompress: ${imp_skopeo_raw[*]} s -> median $(median "${imp_skopeo_raw[@]}") s"
echo "Berth images/import:         ${imp_berth[*]} s -> median $(median "${imp_berth[@]}") s"
python3 -c "print(f'ratio Berth / skopeo: {$(median "${imp_berth[@]}")/$(median "${imp_skopeo[@]}"):.2f}; Berth / skopeo --dest-decompress: {$(median "${imp_berth[@]}")/$(median "${imp_skopeo_raw[@]}"):.2f}')"
echo "Berth's phases (received = archive read, its layers streamed on to the registry; total = with checks, mounts, manifests):"
grep "imported a docker save archive" "$DATA/berth/server.log" | sed 's/\x1b\[[0-9;]*m//g; s/.*archive //' || true

echo
echo "## token endpoint, 16 connections, 10 s"
scope="service=berth-registry&scope=repository:bench/img:pull,push"
for who in token password; do
  if [ "$who" = token ]; then auth=$(printf 'bench:%s' "$API_TOKEN" | base64 -w0); else auth=$(printf 'owner@bench.test:owner-password' | base64 -w0); fi
  out=$(wrk -t2 -c16 -d10s --latency -H "Authorization: Basic $auth" "https://$IP:$((REG_PORT + 1))/token?$scope")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$who: $rps requests/s, p99 $p99${non2xx:+, non-2xx: $non2xx}"
done
