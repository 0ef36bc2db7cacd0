#!/usr/bin/env bash
# Runs the whole test suite and ends with one line totalling every test binary's results, so a reader
# (or CI) sees the outcome of the run rather than of its last, possibly empty, binary. Each failure's
# message is repeated just above that line: a CI that keeps only the head and tail of a long log still
# shows why a test failed. Backtraces are off unless asked for (BERTH_TEST_BACKTRACE=1): a few dozen
# frames of tokio per failure would push the messages out of that tail.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
RUST_BACKTRACE=${BERTH_TEST_BACKTRACE:-0} cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^---- .* stdout ----$/ { name = $2 }
     /panicked at/ { print "\nFAILED " name ": " substr($0, 1, 300); left = 6; next }
     left > 0 && /^(stack backtrace:|note: run with|$)/ { left = 0 }
     left > 0 { print "  " substr($0, 1, 600); left-- }' "$log"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\n%d passed, %d failed\n", p, f }' "$log"
exit "$status"
