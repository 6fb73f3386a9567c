#!/usr/bin/env bash
# Run the sanitizer-built loader fuzzer from the golden files (fuzz/README.md).
#   fuzz/run.sh -max_total_time=120        # CI's bounded slice
#   fuzz/run.sh -runs=1000000              # the long local run
# Extra arguments go to libFuzzer. The corpus grows in fuzz/corpus (not committed); a crash
# leaves its input in fuzz/artifacts/ and the run fails. DCRT_FUZZ_CORPUS / DCRT_FUZZ_ARTIFACTS
# move those folders (the test suite uses temp folders).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz/build.sh
CORPUS=${DCRT_FUZZ_CORPUS:-fuzz/corpus}
ARTIFACTS=${DCRT_FUZZ_ARTIFACTS:-fuzz/artifacts}
mkdir -p "$CORPUS" "$ARTIFACTS"
for f in tests/golden/*.dcz tests/golden/bad/*.dcz; do
  [ "$(stat -c %s "$f")" -le 65536 ] && cp -n "$f" "$CORPUS/" 2>/dev/null || true
done
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec fuzz/build/fuzz_load -max_len=65536 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -artifact_prefix="$ARTIFACTS/" -print_final_stats=1 "$@" "$CORPUS"
