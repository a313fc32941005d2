#!/usr/bin/env bash
# Runs every cargo-fuzz target of dfs for SECONDS each (default 60), starting from the seed
# corpus kept in fuzz/corpus/<target>/, and fails on the first crash, panic, leak, timeout or
# oversized allocation; the input that caused it is kept in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS]
#
# Needs only rustup's stable toolchain, a C++ compiler and make: cargo-fuzz is installed when
# missing, and RUSTC_BOOTSTRAP=1 lets it pass its nightly-only flags (sanitizer, coverage) to the
# stable compiler. New inputs found go to a scratch folder, never into the kept corpus.
set -euo pipefail
secs=${1:-60}
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once, a few minutes)"
  cargo install cargo-fuzz --locked
fi

# Every fuzz target but the corpus writer.
targets=$(cargo fuzz list | grep -vx seeds)
cargo fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=""
for t in $targets; do
  echo "fuzz: $t for ${secs}s"
  mkdir -p "$scratch/$t" "corpus/$t"
  log="$scratch/$t.log"
  set +e
  cargo fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256 \
    -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  runs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "$log" | tail -1)
  summary+="$t: ${runs:-?} executions"$'\n'
  if [ "$status" -ne 0 ]; then
    tail -n 80 "$log" >&2
    echo "fuzz: target $t failed (exit $status); the input is in fuzz/artifacts/$t/" >&2
    exit "$status"
  fi
done
printf 'fuzz: every target passed\n%s' "$summary"
