#!/usr/bin/env bash
# The one command to run on the GPU machine, from the repository root:
#
#   bash bench/seed_limits/run_device.sh
#
# (bench/.carry, made here by bench/seed_limits/pack.sh, must be there: name it in the device
# tool's carry.) Unpacks and builds llama.cpp's llama-server (CUDA, sm_90 only, static libraries,
# Release) in the background while it writes the reduced GLM-4.7 UD-IQ1_M GGUF, runs the planner
# and compiles the ballast; then holds all of GPU 0 but 24 GiB with the ballast and runs the cases
# (seed and planned placements at ctx 16384 and 65536, interleaved) and writes
# $OUT/seed-limits-1gpu.json and $OUT/log.txt (everything printed), plus $OUT/build.log,
# $OUT/pred/ (the planner's JSON) and $OUT/cases/ (each server's log and what the runner saw).
# It stops itself BUDGET_S seconds (default 525) after its start: a case that would end later is
# skipped, a build that would leave no time for a case is stopped.
#
# The build goes to bench/.work (git-ignored, so it stays on a warm device machine): a second run
# there reuses it (ninja has nothing to do) when the source tarball is unchanged.
#
# Environment (all optional): OUT (default bench/out), WORK (/tmp/seedbench: model, ballast),
# BUILD_ROOT (bench/.work), LAYERS (24), CTXS ("16384 65536"), KEEP_MIB (24576), JOBS (nproc),
# BUDGET_S (525), START_TIMEOUT (180), PY (python3), RANDOM_WEIGHTS (1: random bytes instead of a
# sparse zero file; slow). To test this script without a GPU: LLAMA_SERVER (a built llama-server:
# no unpack or build), BALLAST (a built ballast: no nvcc), and fakes/ on PATH.
set -uo pipefail

T0=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/bench/seed_limits"
CARRY="$REPO/bench/.carry"
OUT=${OUT:-$REPO/bench/out}
WORK=${WORK:-/tmp/seedbench}
BUILD_ROOT=${BUILD_ROOT:-$REPO/bench/.work}
LAYERS=${LAYERS:-24}
CTXS=${CTXS:-"16384 65536"}
KEEP_MIB=${KEEP_MIB:-24576}
JOBS=${JOBS:-$(nproc)}
BUDGET_S=${BUDGET_S:-525}
START_TIMEOUT=${START_TIMEOUT:-180}
PY=${PY:-python3}
DEADLINE=$((T0 + BUDGET_S))
MIN_CASE_S=50
mkdir -p "$OUT" "$WORK" "$BUILD_ROOT"
export PYTHONPATH="$CARRY/pydeps:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_DEVICE_ORDER=PCI_BUS_ID   # CUDA's device 0 is nvidia-smi's index 0

BUILD_PID= BALLAST_PID= WARM_PIDS=

now() { echo $(( $(date +%s) - T0 )); }
phase() { echo; echo "=== [t+$(now)s] $*"; }
took() { echo "--- [t+$(now)s] $1 took $(( $(date +%s) - $2 )) s"; }

cleanup() {
  local rc=$?
  if [ -f "$WORK/server.pid" ]; then
    kill -9 -- -"$(cat "$WORK/server.pid")" 2>/dev/null || kill -9 "$(cat "$WORK/server.pid")" 2>/dev/null
    rm -f "$WORK/server.pid"
  fi
  if [ -n "$BUILD_PID" ] && kill -0 "$BUILD_PID" 2>/dev/null; then
    kill -- -"$BUILD_PID" 2>/dev/null || kill "$BUILD_PID" 2>/dev/null
  fi
  for p in $WARM_PIDS; do kill "$p" 2>/dev/null; done
  if [ -n "$BALLAST_PID" ]; then kill "$BALLAST_PID" 2>/dev/null; wait "$BALLAST_PID" 2>/dev/null; fi
  echo "=== [t+$(now)s] done (exit $rc); results in $OUT"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local t tb brc=0 SERVER MODEL

  phase "environment"
  date -u
  command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,driver_version,compute_cap,mig.mode.current \
    --format=csv || true
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv || true
  nvcc --version | tail -2; cmake --version | head -1; echo "ninja $(ninja --version)"
  "$PY" -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
  echo "cores $(nproc), jobs $JOBS"; free -g | head -2; df -h "$WORK" "$BUILD_ROOT" | tail -2
  echo "LAYERS=$LAYERS CTXS=$CTXS KEEP_MIB=$KEEP_MIB BUDGET_S=$BUDGET_S START_TIMEOUT=$START_TIMEOUT"
  ls -l "$CARRY" || { echo "run_device: $CARRY is missing: run pack.sh and carry bench/.carry"; return 1; }

  if [ -z "${LLAMA_SERVER:-}" ]; then
    phase "unpack llama.cpp source into $BUILD_ROOT"
    t=$(date +%s)
    local sum; sum=$(sha256sum "$CARRY/llama-src.tar.xz" | cut -d' ' -f1)
    if [ -d "$BUILD_ROOT/src/llama.cpp" ] && [ "$(cat "$BUILD_ROOT/src.sha256" 2>/dev/null)" = "$sum" ]; then
      echo "same source as the build already there: reusing $BUILD_ROOT"
    else
      rm -rf "$BUILD_ROOT/src" "$BUILD_ROOT/build" "$BUILD_ROOT/src.sha256"; mkdir -p "$BUILD_ROOT/src"
      xz -dc "$CARRY/llama-src.tar.xz" | tar -C "$BUILD_ROOT/src" -xf - || { echo "run_device: unpack failed"; return 1; }
      echo "$sum" > "$BUILD_ROOT/src.sha256"
    fi
    took unpack "$t"

    phase "build llama-server in the background (build_llama.sh, -j$JOBS; log: $OUT/build.log)"
    tb=$(date +%s)
    rm -f "$BUILD_ROOT/build.times"
    if command -v setsid >/dev/null; then
      setsid bash "$HERE/build_llama.sh" "$BUILD_ROOT/src/llama.cpp" "$BUILD_ROOT/build" "$JOBS" \
        "$BUILD_ROOT/build.times" > "$OUT/build.log" 2>&1 &
    else
      bash "$HERE/build_llama.sh" "$BUILD_ROOT/src/llama.cpp" "$BUILD_ROOT/build" "$JOBS" \
        "$BUILD_ROOT/build.times" > "$OUT/build.log" 2>&1 &
    fi
    BUILD_PID=$!
  fi

  phase "write the model (GLM-4.7 UD-IQ1_M shape, $LAYERS layers + the MTP layer)"
  t=$(date +%s)
  MODEL="$WORK/glm47-ud-iq1m-L$LAYERS.gguf"
  "$PY" "$HERE/write_model.py" "$MODEL" --layers "$LAYERS" $([ "${RANDOM_WEIGHTS:-0}" = 1 ] && echo --random) \
    || { echo "run_device: write_model failed"; return 1; }
  ls -ls "$MODEL"
  took "write model" "$t"
  # fill the page cache (zeros) with read() in 4 streams while the build runs; the loader's mmap hits it
  local size part
  size=$(stat -c %s "$MODEL"); part=$(( (size + 4 * 16777216 - 1) / (4 * 16777216) ))
  for i in 0 1 2 3; do
    dd if="$MODEL" of=/dev/null bs=16M skip=$((i * part)) count=$part status=none &
    WARM_PIDS="$WARM_PIDS $!"
  done

  phase "planner predictions (python -m llamarig plan ... --json; the seed's flags through llamarig.planner.plan.evaluate)"
  t=$(date +%s)
  "$PY" "$HERE/predict.py" "$MODEL" "$OUT/pred" --ctx $CTXS --gpus 24 --ram 100 || echo "run_device: predict FAILED"
  took predict "$t"

  phase "compile the ballast"
  t=$(date +%s)
  if [ -n "${BALLAST:-}" ]; then
    cp "$BALLAST" "$WORK/ballast"
  else
    nvcc -O2 -arch=sm_90 -o "$WORK/ballast" "$HERE/ballast.cu" || { echo "run_device: nvcc ballast failed"; return 1; }
  fi
  took "ballast compile" "$t"

  phase "page-cache warm-up"
  t=$(date +%s)
  for p in $WARM_PIDS; do wait "$p" 2>/dev/null; done; WARM_PIDS=
  took "warm-up" "$t"

  phase "start the ballast: hold all of GPU 0 but $KEEP_MIB MiB"
  t=$(date +%s)
  "$WORK/ballast" "$KEEP_MIB" 0 > "$WORK/ballast.out" 2> "$WORK/ballast.err" &
  BALLAST_PID=$!
  for _ in $(seq 1 120); do
    grep -q READY "$WORK/ballast.out" 2>/dev/null && break
    kill -0 "$BALLAST_PID" 2>/dev/null || break
    sleep 0.5
  done
  cat "$WORK/ballast.err" "$WORK/ballast.out"
  grep -q READY "$WORK/ballast.out" || { echo "run_device: the ballast did not get READY"; return 1; }
  nvidia-smi --query-gpu=memory.total,memory.used,memory.free --format=csv
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv || true
  took ballast "$t"

  if [ -z "${LLAMA_SERVER:-}" ]; then
    phase "wait for the build"
    t=$(date +%s)
    local last=0
    while kill -0 "$BUILD_PID" 2>/dev/null; do
      if [ "$(date +%s)" -ge $((DEADLINE - MIN_CASE_S)) ]; then
        echo "run_device: the build is still running and no time is left for a case: stopping it"
        kill -- -"$BUILD_PID" 2>/dev/null || kill "$BUILD_PID"
        break
      fi
      if [ $(( $(date +%s) - last )) -ge 30 ]; then
        last=$(date +%s); echo "  [t+$(now)s] build at $(grep -o '^\[[0-9]*/[0-9]*\]' "$OUT/build.log" | tail -1)"
      fi
      sleep 2
    done
    wait "$BUILD_PID"; brc=$?; BUILD_PID=
    took "build wait" "$t"
    echo "build exit $brc; $(tr '\n' ' ' < "$BUILD_ROOT/build.times" 2>/dev/null)(since its start: $(( $(date +%s) - tb )) s)"
    echo "--- build.log: last 40 of $(wc -l < "$OUT/build.log") lines (all in build.log)"
    tail -40 "$OUT/build.log"
    SERVER="$BUILD_ROOT/build/bin/llama-server"
  else
    SERVER="$LLAMA_SERVER"
  fi

  if [ "$brc" -ne 0 ] || [ ! -x "$SERVER" ]; then
    echo "run_device: no llama-server: the cases are not run"
  else
    "$SERVER" --version 2>&1 | tail -3
    phase "cases (the last must end by t+$((DEADLINE - T0))s)"
    t=$(date +%s)
    "$PY" "$HERE/cases.py" --server "$SERVER" --model "$MODEL" --pred "$OUT/pred" --out "$OUT/cases" \
      --ctx $CTXS --deadline "$DEADLINE" --start-timeout "$START_TIMEOUT" --pidfile "$WORK/server.pid" \
      --min-case-s "$MIN_CASE_S"
    took cases "$t"
    for f in "$OUT"/cases/*.log; do
      [ -f "$f" ] || continue
      echo; echo "----- $(basename "$f"): llama.cpp's memory lines"
      grep -E "buffer size =|common_memory_breakdown_print|projected to use|offloaded [0-9]+/|out of memory|failed to allocate|unable to allocate|error" "$f" | head -60
      echo "----- $(basename "$f"): last 15 lines"; tail -15 "$f"
    done
  fi

  phase "collect"
  "$PY" "$HERE/collect.py" --cases "$OUT/cases" --pred "$OUT/pred" --out "$OUT/seed-limits-1gpu.json" --ctx $CTXS
  echo "total $(now) s"
}

main 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
