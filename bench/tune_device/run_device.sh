#!/usr/bin/env bash
# The one command of the GPU machine, run again until it says "tune: done" (each call at most CALL_S):
#
#   bash bench/tune_device/run_device.sh      (carry: bench/tune_device/.carry)
#
# First call: starts both CUDA builds detached (build_both.sh), writes the Qwen3-30B-A3B-shaped Q8_0
# GGUF (bench/serve_bench/write_model.py) and reads it into the page cache, compiles the ballast.
# Every call: waits for what is running; once both builds and the model are there, holds all of GPU 0
# but KEEP_MIB with the ballast and starts run_tune.py detached (MINUTES of measuring); once it is
# done, copies its results to $OUT. Work lives in WORK (/tmp/tunedev), which outlives a call while the
# machine stays warm. Power limits and clocks are never touched.
set -uo pipefail
T0=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/bench/tune_device"
WORK=${WORK:-/tmp/tunedev}
OUT=${OUT:-$HERE/out}
CALL_S=${CALL_S:-540}
KEEP_MIB=${KEEP_MIB:-24576}
MINUTES=${MINUTES:-12}
TUNE_ARGS=${TUNE_ARGS:---depth 1024 --tokens 64 --repetitions 10 --rounds 2 --axes ubatch,margin,fork_options --ubatches 1024 --drop grouped_expert_routing,merge_qkv,gpu_margin_mib_768,^ubatch_size,^gpu_margin --load-timeout 240}
B="$WORK/build"
mkdir -p "$WORK" "$OUT"
export PYTHONPATH="$HERE/.carry/pydeps:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
left() { echo $(( T0 + CALL_S - $(date +%s) )); }
say() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }

if [ ! -f "$WORK/started" ]; then
  say "first call: $(nvidia-smi --query-gpu=name,memory.total,memory.used,power.limit,clocks.sm --format=csv,noheader)"
  cmake --version | head -1; nvcc --version | tail -1; nproc
  if [ -f "$HERE/.carry/bins.tar.xz.part0" ]; then
    # builds brought back by an earlier session (see the end of this script): no build this time
    mkdir -p "$B" && cat "$HERE"/.carry/bins.tar.xz.part* > "$WORK/bins.tar.xz"
    (cd "$WORK" && sed 's#  .*#  bins.tar.xz#' "$HERE/.carry/bins.sha256" | sha256sum -c -) || { say "carried builds corrupt"; exit 1; }
    xz -dc "$WORK/bins.tar.xz" | tar -C "$B" -xf -
    for fork in ik_llama.cpp llama.cpp; do printf 'rc=0\nseconds=0\ncarried=1\n' > "$B/$fork.done"; done
    printf 'ik_llama.cpp=0\nllama.cpp=0\n' > "$B/all.done"; touch "$WORK/bins.packed"
    say "carried builds unpacked: $(ls "$B"/*/bin | tr '\n' ' ')"
  else
    setsid nohup bash "$HERE/build_both.sh" "$WORK/src" "$B" "$(nproc)" > "$WORK/build_both.out" 2>&1 < /dev/null &
  fi
  setsid nohup bash -c "python3 '$REPO/bench/serve_bench/write_model.py' '$WORK/model.gguf' > '$WORK/model.log' 2>&1 \
      && cat '$WORK/model.gguf' > /dev/null && touch '$WORK/model.ok'" < /dev/null > /dev/null 2>&1 &
  setsid nohup bash -c "nvcc -O2 -arch=sm_90 -o '$WORK/ballast' '$REPO/bench/seed_limits/ballast.cu' > '$WORK/ballast.build' 2>&1" \
      < /dev/null > /dev/null 2>&1 &
  touch "$WORK/started"
fi

built() { bash "$HERE/build_both.sh" --status "$B" > "$WORK/status.txt" 2>&1; echo $?; }
while [ "$(built)" = 3 ] || [ ! -f "$WORK/model.ok" ] || [ ! -x "$WORK/ballast" ]; do
  [ "$(left)" -gt 20 ] || { say "waiting: $(tr '\n' ' ' < "$WORK/status.txt") model: $(tail -c 200 "$WORK/model.log" 2>/dev/null)"; exit 0; }
  sleep 10
done
cat "$WORK/status.txt"
[ "$(built)" = 0 ] || { say "a build failed"; cp "$B"/*.log "$OUT/" 2>/dev/null; exit 1; }
if [ ! -f "$WORK/bins.packed" ]; then
  # the two builds come home first, before the tune (a later session carries them instead of building:
  # put the parts and bins.sha256 in bench/tune_device/.carry/); at most 5 parts of 15 MB, else none
  tar -C "$B" -cf - llama.cpp/bin ik_llama.cpp/bin | xz -T0 -3 > "$WORK/bins.tar.xz"
  ls -l "$WORK/bins.tar.xz"
  if [ "$(stat -c %s "$WORK/bins.tar.xz")" -le 75000000 ]; then
    split -b 15000000 -d -a 1 "$WORK/bins.tar.xz" "$OUT/bins.tar.xz.part"
    (cd "$WORK" && sha256sum bins.tar.xz) > "$OUT/bins.sha256"
  fi
  touch "$WORK/bins.packed"
fi

if [ ! -f "$WORK/tune.started" ]; then
  say "ballast: hold all of GPU 0 but $KEEP_MIB MiB"
  setsid nohup "$WORK/ballast" "$KEEP_MIB" 0 > "$WORK/ballast.out" 2> "$WORK/ballast.err" < /dev/null &
  for _ in $(seq 1 120); do grep -q READY "$WORK/ballast.out" 2>/dev/null && break; sleep 0.5; done
  cat "$WORK/ballast.out" "$WORK/ballast.err"
  grep -q READY "$WORK/ballast.out" || { say "the ballast did not get READY"; exit 1; }
  nvidia-smi --query-gpu=memory.total,memory.used,memory.free --format=csv | tee "$WORK/env-before.txt"
  # shellcheck disable=SC2086
  setsid nohup python3 "$HERE/run_tune.py" --model "$WORK/model.gguf" --llama "$B/llama.cpp/bin/llama-server" \
      --ik "$B/ik_llama.cpp/bin/llama-server" --out "$WORK/tune" --minutes "$MINUTES" $TUNE_ARGS \
      > "$WORK/tune.log" 2>&1 < /dev/null &
  touch "$WORK/tune.started"
fi
# what there is so far, in one file (the device tool brings back at most 8): the log, the partial
# results, the candidates' own logs, the build times
home() {
  cat "$B"/*.done > "$WORK/build-times.txt" 2>/dev/null
  (cd "$WORK" && tar -czf "$OUT/partial.tar.gz" --ignore-failed-read tune.log env-before.txt build-times.txt \
      tune/partial.json tune/logs 2>/dev/null)
}
while [ ! -f "$WORK/tune/tune.txt" ]; do
  if ! pgrep -f "$HERE/run_tune.py" > /dev/null && [ ! -f "$WORK/tune/tune.txt" ]; then
    say "run_tune.py ended without a result:"; tail -40 "$WORK/tune.log"
    home; exit 1
  fi
  if [ "$(left)" -le 15 ]; then
    # every call takes home what there is so far (the machine may be gone before the next one)
    home
    say "tune running: $(grep '^tune: round' "$WORK/tune.log" | tail -2 | tr '\n' ' ')"; exit 0
  fi
  sleep 5
done
pkill -f "$WORK/ballast" || true
cp "$WORK/tune/tune.json" "$WORK/tune/tune.txt" "$WORK/tune.log" "$OUT/"
cat "$B"/*.done > "$WORK/build-times.txt"
tar -C "$WORK" -czf "$OUT/results.tar.gz" tune/logs tune.log env-before.txt model.log build-times.txt ballast.out
cat "$WORK/tune/tune.txt"
say "tune: done"
