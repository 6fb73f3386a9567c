#!/usr/bin/env bash
# Build the libFuzzer target fuzz/build/fuzz_load with AddressSanitizer + UBSan (clang).
#   fuzz/build.sh            # CXX defaults to clang++-14, or clang++
# The ISA-specific kernels get the same per-file flags as CMakeLists.txt, so the fuzzer runs the
# kernels the CPU would pick.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX:-$(command -v clang++-14 || command -v clang++ || true)}
[ -n "$CXX" ] || { echo "fuzz/build.sh: needs clang++ (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 2; }
OUT=fuzz/build
mkdir -p "$OUT/obj"
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
FLAGS="-std=c++17 -O1 -g $SAN -Icsrc -DDCRT_HAVE_AVX2=1"
declare -A ISA=(
  [csrc/kernels/qsparse_avx2.cpp]="-mavx2 -mfma"
  [csrc/kernels/spmv16_bmi2.cpp]="-mavx2 -mfma -mbmi -mbmi2"
  [csrc/huffman_bmi2.cpp]="-mbmi -mbmi2"
  [csrc/crc32_pclmul.cpp]="-mpclmul -msse4.1"
  [csrc/kernels/spmv16_avx512.cpp]="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mbmi -mbmi2 -mavx2"
  [csrc/kernels/qsparse_avx512.cpp]="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mbmi -mbmi2 -mavx2"
  [csrc/huffman_avx512.cpp]="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mbmi -mbmi2 -mavx2 -mavx512vbmi"
  [csrc/kernels/dense_lowp_avx512.cpp]="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mbmi -mbmi2 -mavx2 -mavx512vnni -mavx512vbmi -mavx512bf16 -ffp-contract=off"
)
# The core's sources as CMakeLists.txt lists them (one list to keep), then the ISA files.
mapfile -t CORE < <(sed -n '/^add_library(dcrt_core STATIC/,/^)/p' CMakeLists.txt | grep -o 'csrc/[^ )]*\.cpp')
SRC=("${CORE[@]}" "${!ISA[@]}" fuzz/fuzz_load.cpp)
pids=() objs=()
for s in "${SRC[@]}"; do
  o="$OUT/obj/$(echo "$s" | tr / _).o"
  objs+=("$o")
  if [ ! -e "$o" ] || [ "$s" -nt "$o" ] || [ -n "$(find csrc fuzz -name '*.hpp' -newer "$o" -o -name '*.inl' -newer "$o" | head -1)" ]; then
    $CXX $FLAGS ${ISA[$s]:-} -c "$s" -o "$o" &
    pids+=($!)
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
$CXX -std=c++17 -g -fsanitize=fuzzer,address,undefined "${objs[@]}" -lpthread -o "$OUT/fuzz_load"
echo "built $OUT/fuzz_load"
