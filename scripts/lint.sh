#!/usr/bin/env bash
# Static analysis of pgshard's own sources (common config parser shardmap proxy migrate):
# clang-tidy with the checked-in .clang-tidy, using BUILD's compile_commands.json,
# cppcheck with .cppcheck-suppressions, and clang-format --dry-run on every tracked C file. Prints every finding and exits 1 if there is one;
# exits 77 (ctest: skipped) when a tool is missing. The ctest test `lint` runs it.
#   scripts/lint.sh BUILD [JOBS]
set -uo pipefail
BUILD=${1:?usage: lint.sh BUILD [JOBS]}
JOBS=${2:-2}
SRC=$(cd "$(dirname "$0")/.." && pwd)
DIRS=(common config parser shardmap proxy migrate)

tidy=$(command -v clang-tidy-14 || command -v clang-tidy || true)
cppcheck=$(command -v cppcheck || true)
if [ -z "$tidy" ] || [ -z "$cppcheck" ]; then
  echo "lint: SKIPPED: clang-tidy or cppcheck is not installed (scripts/deps.sh installs both)"
  exit 77
fi
[ -f "$BUILD/compile_commands.json" ] || { echo "lint: no $BUILD/compile_commands.json (configure with CMake first)" >&2; exit 2; }
BUILD=$(cd "$BUILD" && pwd)

cd "$SRC" || exit 2
files=$(git ls-files "${DIRS[@]/%//*.c}" 2>/dev/null || find "${DIRS[@]}" -name '*.c')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s)

# clang-tidy: one file per process (clang-tidy 14's analyzer reports false va_list errors
# in the later files of a multi-file run), JOBS processes at a time. WarningsAsErrors makes
# a finding an error, so xargs exits non-zero when any file has one.
rc=0
if ! printf '%s\n' $files | xargs -P "$JOBS" -n 1 "$tidy" -p "$BUILD" --quiet >"$out/tidy.log" 2>&1; then
  grep -E '(warning|error):' -A3 "$out/tidy.log" | grep -vE '^--$|warnings? (generated|treated as errors)'
  echo "lint: clang-tidy found problems (above)"
  rc=1
fi

# cppcheck: the sources alone (no system headers), every warning and style class.
if ! "$cppcheck" -q -j "$JOBS" --std=c11 -I . -D_GNU_SOURCE -DPGS_VERSION=\"lint\" \
    --enable=warning,style,performance,portability --inline-suppr \
    --suppressions-list=.cppcheck-suppressions --error-exitcode=1 "${DIRS[@]}"; then
  echo "lint: cppcheck found problems (above)"
  rc=1
fi
# clang-format: every tracked C file as .clang-format lays it out (`make format` fixes it).
fmt=$(command -v clang-format-14 || command -v clang-format || true)
if [ -n "$fmt" ]; then
  drift=$(git ls-files '*.c' '*.h' | while read -r f; do
    "$fmt" --dry-run "$f" 2>&1 | grep -q warning && echo "$f"; done)
  if [ -n "$drift" ]; then
    echo "$drift"
    echo "lint: not formatted as .clang-format says (above): run make format"
    rc=1
  fi
fi
echo "lint: $(printf '%s\n' $files | wc -l) files in $(( $(date +%s) - start )) s: $([ $rc -eq 0 ] && echo clean || echo FAILED)"
exit $rc
