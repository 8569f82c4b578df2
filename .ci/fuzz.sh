#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ for a bounded time (FUZZ_SECONDS, default 20) from the
# committed seeds, and fails on the first crash, leak or timeout. Installs cargo-fuzz when it is
# missing (about 4 minutes, once). The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass the sanitizer flags it needs.
#
# Usage: bash .ci/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_EACH=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

echo "fuzz: building ${targets[*]}"
cargo fuzz build
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${SECONDS_EACH}s"
  # The first directory collects what the fuzzer finds (not committed); the seeds are read only.
  mkdir -p "corpus/$t"
  if ! cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"corpus/$t.log" 2>&1; then
    tail -40 "corpus/$t.log"
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/ — make it a unit test in keymaster-core"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::new_units_added" "corpus/$t.log" | tr '\n' ' '; echo
done
echo "fuzz: all targets ran ${SECONDS_EACH}s without a crash"
