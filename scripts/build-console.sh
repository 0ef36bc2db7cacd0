#!/usr/bin/env bash
# Builds the web console (frontend/, crate berth-console) into target/console, which `berth serve`
# serves at `/` (BERTH_CONSOLE_DIR):
#   cargo (wasm32, profile wasm-release) → wasm-bindgen (the CLI at the crate's version in Cargo.lock)
#   → wasm-opt -Oz when npm's binaryen is installed (scripts/install-deps.sh puts it in target/tools;
#   Debian's binaryen 108 makes wasm that browsers reject, so it is never used)
#   → content-hashed asset names, index.html naming them, brotli and gzip copies.
# The new build replaces the old one in a single rename, so a running Berth never serves half of one.
#
#   CONSOLE_PROFILE=dev scripts/build-console.sh    a quick unoptimised build while working on the console
#   CONSOLE_KEEP_NAMES=1 scripts/build-console.sh    an optimised build that keeps function names (for
#                                                   CPU profiles, e.g. `PROFILE_LIVE` of make bench-console)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
profile="${CONSOLE_PROFILE:-wasm-release}"
out="${BERTH_CONSOLE_OUT:-$root/target/console}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

# Leptos's `erase_components` type-erases every component's view: the optimised wasm is a fifth smaller
# (544 → 444 KiB as brotli sends it, measured 2026-11-26), which keeps the first load under 500 KB.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS:-} --cfg erase_components"
cargo build -q -p berth-console --target wasm32-unknown-unknown --profile "$profile"
case "$profile" in dev) built="$target_dir/wasm32-unknown-unknown/debug" ;; *) built="$target_dir/wasm32-unknown-unknown/$profile" ;; esac

stage="$(mktemp -d "$root/target/console-build.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
mkdir -p "$stage/assets"
wasm-bindgen --target web --no-typescript --out-dir "$stage" --out-name berth-console "$built/berth-console.wasm"

wasm_opt="$root/target/tools/binaryen/node_modules/.bin/wasm-opt"
if [ "$profile" != dev ] && [ -x "$wasm_opt" ]; then
  names=(); [ -n "${CONSOLE_KEEP_NAMES:-}" ] && names=(-g)
  "$wasm_opt" -Oz "${names[@]}" "$stage/berth-console_bg.wasm" -o "$stage/berth-console_opt.wasm"
  mv "$stage/berth-console_opt.wasm" "$stage/berth-console_bg.wasm"
fi

hash() { sha256sum "$1" | cut -c1-16; }
wasm="berth-console-$(hash "$stage/berth-console_bg.wasm").wasm"
mv "$stage/berth-console_bg.wasm" "$stage/assets/$wasm"
js="berth-console-$(hash "$stage/berth-console.js").js"
mv "$stage/berth-console.js" "$stage/assets/$js"
style="style-$(hash frontend/style.css).css"
cp frontend/style.css "$stage/assets/$style"
# The start-up script is a file of its own: the Content-Security-Policy allows no inline script.
printf 'import init from "./%s";\ninit({ module_or_path: "/assets/%s" });\n' "$js" "$wasm" > "$stage/boot.js"
boot="boot-$(hash "$stage/boot.js").js"
mv "$stage/boot.js" "$stage/assets/$boot"
sed -e "s/@STYLE@/$style/" -e "s/@JS@/$js/" -e "s/@BOOT@/$boot/" frontend/index.html > "$stage/index.html"

for f in "$stage/index.html" "$stage"/assets/*; do
  brotli -q 11 -k -f "$f"
  gzip -9 -k -f "$f"
done

rm -rf "$out.old"
[ -d "$out" ] && mv "$out" "$out.old"
mv "$stage" "$out"
rm -rf "$out.old"
trap - EXIT
echo "console: $out ($(du -k "$out/assets/$wasm" | cut -f1) KiB wasm, $(du -k "$out/assets/$wasm.br" | cut -f1) KiB brotli)"
