#!/usr/bin/env bash
# The whole test suite, from the root of a clone on Debian 12 (as root):
#   bash scripts/test.sh
# Installs what it needs (scripts/deps.sh --test: the demo's packages and the
# test world: daemons, packer, cloud-init, fuzzers), fetches containerd 2.1 and
# Docker 28 beside the tests (scripts/newer-runtimes.sh), checks formatting, then builds and
# runs the tests twice: a normal build, then an AddressSanitizer +
# UndefinedBehaviorSanitizer build (every test but the packaging ones, label
# "packaging"); the engine's unit tests also run under ThreadSanitizer.  Then the
# libFuzzer targets run briefly.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-5}
passed=0
failed=0

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
bash scripts/deps.sh --test

step "containerd 2.1 and Docker 28 (Debian sid, unpacked under /var/tmp/prepull-newer)"
bash scripts/newer-runtimes.sh

step "clang-format"
mapfile -t sources < <(git ls-files 'agent/*.c' 'agent/*.h' 'include/*.h' 'tests/unit/*.c' 'tests/fuzz/*.c')
if clang-format --dry-run --Werror "${sources[@]}"; then
  passed=$((passed + 1))
  echo "formatting ok (${#sources[@]} files)"
else
  failed=$((failed + 1))
  echo "formatting: run clang-format -i on the files above" >&2
fi

step "layout (file sizes, store doors, private headers, include circles)"
if bash scripts/check-layout.sh; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

# Runs ctest in a build dir (with any further ctest arguments) and adds its counts to
# the totals.
run_ctest() { # BUILD_DIR [CTEST_ARGS...]
  local log="$1/ctest.log" rc=0 dir=$1
  shift
  ctest --test-dir "$dir" --output-on-failure -j "${CTEST_JOBS:-3}" "$@" 2>&1 | tee "$log" || rc=$?
  local line
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "ctest in $dir ran no tests (rc=$rc)" >&2
    failed=$((failed + 1))
    return
  fi
  local total fails
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  fails=$(sed -E 's/.*tests passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
  passed=$((passed + total - fails))
  failed=$((failed + fails))
}

step "build (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS"
step "tests"
# The hostile-registry fuzzer runs 20 s here and its full 60 s in the sanitizer pass,
# where a memory error it provokes shows.
HOSTILE_SECONDS=${HOSTILE_SECONDS:-20} run_ctest build

step "build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPREPULL_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$JOBS"
step "tests under ASan + UBSan"
# The sanitizers get an exit code of their own: with their default (1) a leak or
# undefined behaviour on a path where a test expects exit 1 would pass.  The
# integration harness (tests/integration/lib.sh) also fails a test whose prepull
# stderr holds a sanitizer report.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86 \
  UBSAN_OPTIONS=print_stacktrace=1:exitcode=86 run_ctest build-asan -LE packaging

step "engine unit tests under ThreadSanitizer (the hash workers, the flush thread)"
# The engine's tests run the hash workers against the loop thread for real;
# any report fails the step (halt_on_error, and its report looked for).
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DPREPULL_TSAN=ON >/dev/null
TSAN_TESTS=(test_engine test_hashpool test_flusher test_digest)
cmake --build build-tsan -j "$JOBS" --target "${TSAN_TESTS[@]}"
for t in "${TSAN_TESTS[@]}"; do
  if TSAN_OPTIONS=halt_on_error=1:exitcode=66 "build-tsan/tests/$t" >"build-tsan/$t.log" 2>&1 &&
    ! grep -q 'ThreadSanitizer' "build-tsan/$t.log"; then
    passed=$((passed + 1))
    echo "$t: passed, no ThreadSanitizer report"
  else
    failed=$((failed + 1))
    echo "$t under ThreadSanitizer: FAILED" >&2
    tail -n 60 "build-tsan/$t.log" >&2
  fi
done

step "fuzz targets: seed corpora replayed, then ${FUZZ_SECONDS}s each"
CC=clang cmake -S . -B build-fuzz -DPREPULL_FUZZ=ON -DPREPULL_TESTS=OFF >/dev/null
cmake --build build-fuzz -j "$JOBS"
run_ctest build-fuzz/tests/fuzz
for target in build-fuzz/tests/fuzz/fuzz_*; do
  [ -x "$target" ] || continue
  name=$(basename "$target")
  corpus=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$name/." "$corpus/" 2>/dev/null || true
  if "$target" -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 "$corpus" \
      >"build-fuzz/$name.log" 2>&1; then
    passed=$((passed + 1))
    echo "$name: no crash in ${FUZZ_SECONDS}s"
  else
    failed=$((failed + 1))
    echo "$name: FAILED" >&2
    tail -n 40 "build-fuzz/$name.log" >&2
  fi
  rm -rf "$corpus"
done

echo
echo "prepull: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
