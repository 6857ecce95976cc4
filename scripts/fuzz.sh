#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz (fuzz_NAME.c, built by `make build-asan`) for N
# seconds each, one after the other, from its seeds and with its dictionary. New inputs go to
# BUILD/tests/fuzz/corpus_NAME, crash inputs to BUILD/tests/fuzz/fuzz_NAME-crash-*, the whole
# output to BUILD/tests/fuzz/fuzz_NAME.log. Prints each target's coverage and final stats;
# exits 1 when a target crashed (or timed out, or ran out of memory). A third argument (make's
# FUZZ_TARGETS) names the targets to run, e.g. "backend copy"; all of them without it.
set -uo pipefail
BUILD=${1:-build-asan}
SECONDS_EACH=${2:-60}
ONLY=${3:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(cd "$BUILD/tests/fuzz" && pwd) || { echo "no $BUILD/tests/fuzz: build with clang (make build-asan)" >&2; exit 2; }
FAILED=()
for c in "$SRC"/tests/fuzz/fuzz_*.c; do
  t=$(basename "$c" .c)
  name=${t#fuzz_}
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  log=$DIR/$t.log
  mkdir -p "$DIR/corpus_$name"
  echo "== $t (${SECONDS_EACH} s)"
  "$DIR/$t" -max_total_time="$SECONDS_EACH" -timeout=25 -print_final_stats=1 \
    -dict="$SRC/tests/fuzz/$name.dict" -artifact_prefix="$DIR/$t-" \
    "$DIR/corpus_$name" "$SRC/tests/fuzz/seeds_$name" >"$log" 2>&1
  rc=$?
  # libFuzzer's last status line ("#N DONE cov: C ft: F corp: ...") and its final stats.
  grep -E '^#[0-9]+.* cov: ' "$log" | tail -n 1
  grep '^stat::' "$log"
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$t")
    echo "-- $t failed (exit $rc):"
    grep -E 'ERROR:|SUMMARY:|^    #[0-9] |Test unit written|artifact_prefix' "$log" | head -n 40
  fi
done
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "crashed: ${FAILED[*]} (logs and inputs in $DIR)"
  exit 1
fi
echo "no crashes"
