#!/usr/bin/env bash
# Installs what Berth needs on a Debian 12 machine, and nothing when everything is already there.
# Used by `make run`, `make test` and `make bench`; safe to run again.
#
#   scripts/install-deps.sh          runtime and test dependencies
#   scripts/install-deps.sh bench    also the load generator
set -euo pipefail

need=()
have_pg() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; }
have_pg || need+=(postgresql)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)   # the README's tour uses it
# Local clusters: a dockerd per node (docker.io), namespaces and bridges (iproute2), DOCKER-USER rules.
command -v dockerd >/dev/null || need+=(docker.io)
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v nsenter >/dev/null || need+=(util-linux)
# The built-in registry (distribution 2.8), and busybox-static: the gallery's base image (and the tests' images) are made from its /bin/busybox.
command -v docker-registry >/dev/null || need+=(docker-registry)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cc >/dev/null || need+=(gcc)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
# The router: Berth drives Debian's HAProxy (2.6) as each cluster's ingress.
command -v haproxy >/dev/null || need+=(haproxy)
# The TLS tests obtain certificates from Debian's pebble (a real ACME server) on loopback.
command -v pebble >/dev/null || need+=(pebble)
# The web console: precompressed assets (brotli), wasm-opt and axe-core from npm; its tests drive
# Debian's Chromium through ChromeDriver.
command -v brotli >/dev/null || need+=(brotli)
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# The API conformance test runs schemathesis (PyPI) from a virtualenv under target/.
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ "${1:-}" = bench ]; then
  command -v wrk >/dev/null || need+=(wrk)
  command -v skopeo >/dev/null || need+=(skopeo)   # the import benchmark's baseline
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Berth needs these Debian packages: ${need[*]}. Run as root, or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts services on install where it can; Berth runs its own, so leave the machine as it was
  # (a system docker-registry would also hold port 5000 on every address).
  for unit in docker-registry haproxy; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
  if [ -d /etc/postgresql ] && command -v pg_lsclusters >/dev/null; then
    pg_lsclusters --no-header 2>/dev/null | awk '$4=="online"{print $1, $2}' | while read -r v c; do
      pg_ctlcluster "$v" "$c" stop || true
    done
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "Berth builds with Rust: install it from https://rustup.rs and run this again" >&2
  exit 1
fi

# schemathesis, pinned, in its own virtualenv (Debian's Python refuses system-wide pip installs).
SCHEMATHESIS_VERSION=4.32.5
venv="$(cd "$(dirname "$0")/.." && pwd)/target/tools/schemathesis"
if [ "$("$venv/bin/st" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The console's toolchain: the wasm target, and wasm-bindgen's CLI at exactly the version of the
# wasm-bindgen crate in Cargo.lock (they must match). `--locked` is left out on purpose: the CLI's own
# lock file names crate versions that a registry mirror may not have yet.
root="$(cd "$(dirname "$0")/.." && pwd)"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
wasm_bindgen_version=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p}' "$root/Cargo.lock")
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wasm_bindgen_version" ]; then
  echo "installing wasm-bindgen-cli $wasm_bindgen_version (a few minutes, once)"
  CARGO_TARGET_DIR="$root/target/tools/wasm-bindgen-build" cargo install -q wasm-bindgen-cli --version "$wasm_bindgen_version"
  rm -rf "$root/target/tools/wasm-bindgen-build"
fi
# npm packages, pinned, under target/tools: binaryen's wasm-opt (Debian's binaryen 108 makes wasm that
# browsers reject) and axe-core, the accessibility engine the browser tests inject into each page.
npm_tool() { # name version
  local dir="$root/target/tools/$1"
  [ "$(cat "$dir/.version" 2>/dev/null)" = "$2" ] && return 0
  echo "installing $1 $2 (npm) into $dir"
  rm -rf "$dir" && mkdir -p "$dir"
  npm install -s --no-audit --no-fund --prefix "$dir" "$1@$2" >/dev/null && echo "$2" > "$dir/.version"
}
npm_tool binaryen 132.0.0 || echo "warning: npm's binaryen could not be installed; the console is built without wasm-opt (larger, same behaviour)" >&2
npm_tool axe-core 4.14.1
