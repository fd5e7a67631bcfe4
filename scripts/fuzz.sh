#!/usr/bin/env bash
# Build the libFuzzer targets with clang (ASan+UBSan) and run each for SECONDS (default 30).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# The committed seed corpora in tests/fuzz/corpus/ are read, never written: new inputs go to
# build/fuzz/corpus/. A crash fails the run and leaves its input in build/fuzz/crashes/; add it
# to the target's seed corpus as a regression once fixed. HERALD_FUZZ_BUILD names another build
# directory (default build/fuzz). A target with tests/fuzz/<target>.dict gets that dictionary.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config codec_msgpack codec_json pubbody zmq_request http ipconn_frame
                                     download_range release_version smpp_receipt smpp_pdu)
bd=${HERALD_FUZZ_BUILD:-build/fuzz}
CC=clang cmake -S . -B "$bd" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERALD_FUZZ=ON \
  -DHERALD_TESTS=OFF >/dev/null
cmake --build "$bd" -j "$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null
mkdir -p "$bd/crashes"
fail=0
passed=0
for t in "${targets[@]}"; do
  mkdir -p "$bd/corpus/$t"
  log="$bd/$t.log"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  if "$bd"/tests/fuzz/fuzz_"$t" -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" \
       -artifact_prefix="$bd/crashes/$t-" "$bd/corpus/$t" "tests/fuzz/corpus/$t" \
       >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$')
    echo "fuzz $t: ${execs:-?} executions in ${secs}s, no crash"
    passed=$((passed + 1))
  else
    echo "fuzz $t: CRASH — see $log and $bd/crashes/"
    grep -E "ERROR|SUMMARY" "$log" | head -5
    fail=$((fail + 1))
  fi
done
echo "fuzz: $passed passed, $fail failed"
[ "$fail" -eq 0 ]
