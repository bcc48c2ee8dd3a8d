#!/usr/bin/env bash
# The one command to run on the GPU machine, from the repository root:
#
#   bash bench/serve_bench/run_device.sh
#
# (bench/serve_bench/.carry, made here by bench/serve_bench/pack.sh, must be there: name it in the
# device tool's carry.) Unpacks llama.cpp and builds llama-server and llama-bench (CUDA, sm_90 only,
# static, Release) in the background while it writes the Qwen3-30B-A3B-shaped GGUF (write_model.py)
# and reads it once into the page cache; starts llama-server with the flags below, waits for
# /health, then runs rounds.py (rig bench and llama-bench interleaved) until BUDGET_S seconds after
# its own start, and stops the server. Everything goes to $OUT: log.txt (all it printed),
# build.log, server.log, rounds.jsonl (one line per tool invocation), env.txt (the GPU's state
# before and after).
#
# A second call on the same (still warm) machine reuses the build (bench/serve_bench/.work, git-
# ignored, kept there) and the model (WORK), and goes on numbering rounds from FIRST_ROUND.
#
# Environment (all optional): OUT (bench/serve_bench/out), WORK (/tmp/servebench), BUILD_ROOT
# (bench/serve_bench/.work), JOBS (nproc), BUDGET_S (560), LAYERS (48), DEPTHS (512,4096,16384),
# TOKENS (128), REPS (1 per round), ROUNDS_MAX (40), FIRST_ROUND (0), NGL (99), THREADS (8),
# CTX (20480), PORT (8091), GPUS (0; empty: no power sampling), PY (python3), START_TIMEOUT (240),
# DIAG_S (0: seconds kept at the end for diag.py's two checks, written to $OUT/diag.jsonl).
# Without a GPU (a test of this script): LLAMA_SERVER and LLAMA_BENCH (built binaries: no unpack,
# no build), NGL=0 GPUS= and small DEPTHS/TOKENS/LAYERS; SERVER_EXTRA and LB_EXTRA add flags to
# each (a CPU whose AMX path crashes in a VM wants SERVER_EXTRA=--no-repack LB_EXTRA="--repack 0").
set -uo pipefail

T0=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/bench/serve_bench"
CARRY="$HERE/.carry"
OUT=${OUT:-$HERE/out}
WORK=${WORK:-/tmp/servebench}
BUILD_ROOT=${BUILD_ROOT:-$HERE/.work}
JOBS=${JOBS:-$(nproc)}
BUDGET_S=${BUDGET_S:-560}
LAYERS=${LAYERS:-48}
DEPTHS=${DEPTHS:-512,4096,16384}
TOKENS=${TOKENS:-128}
REPS=${REPS:-1}
ROUNDS_MAX=${ROUNDS_MAX:-40}
FIRST_ROUND=${FIRST_ROUND:-0}
NGL=${NGL:-99}
THREADS=${THREADS:-8}
CTX=${CTX:-20480}
PORT=${PORT:-8091}
GPUS=${GPUS-0}
PY=${PY:-python3}
START_TIMEOUT=${START_TIMEOUT:-240}
DIAG_S=${DIAG_S:-0}
DEADLINE=$((T0 + BUDGET_S))
mkdir -p "$OUT" "$WORK" "$BUILD_ROOT"
export PYTHONPATH="$CARRY/pydeps:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_DEVICE_ORDER=PCI_BUS_ID   # CUDA's device 0 is nvidia-smi's index 0
# the same flags for both tools (llama-bench spells -fa's value and -r itself; -tb = -t there)
SERVER_FLAGS=(-ngl "$NGL" -fa on -ctk f16 -ctv f16 -ub 512 -b 2048 -t "$THREADS" -tb "$THREADS"
              -c "$CTX" --parallel 1 --fit off ${SERVER_EXTRA:-})
LB_FLAGS="-ngl $NGL -fa on -ctk f16 -ctv f16 -ub 512 -b 2048 -t $THREADS ${LB_EXTRA:-}"

BUILD_PID= WARM_PIDS=

now() { echo $(( $(date +%s) - T0 )); }
phase() { echo; echo "=== [t+$(now)s] $*"; }
took() { echo "--- [t+$(now)s] $1 took $(( $(date +%s) - $2 )) s"; }

gpu_state() {
  command -v nvidia-smi >/dev/null || { echo "(no nvidia-smi)"; return; }
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,power.draw,power.limit,enforced.power.limit,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,pstate,persistence_mode,mig.mode.current,clocks_throttle_reasons.active --format=csv 2>&1
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv 2>&1
}

cleanup() {
  local rc=$?
  if [ -f "$WORK/server.pid" ]; then
    local pid; pid=$(cat "$WORK/server.pid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$WORK/server.pid"
  fi
  if [ -n "$BUILD_PID" ] && kill -0 "$BUILD_PID" 2>/dev/null; then
    kill -- -"$BUILD_PID" 2>/dev/null || kill "$BUILD_PID" 2>/dev/null
  fi
  for p in $WARM_PIDS; do kill "$p" 2>/dev/null; done
  { echo "== after ($(date -u +%FT%TZ))"; gpu_state; } >> "$OUT/env.txt"
  echo "=== [t+$(now)s] done (exit $rc); results in $OUT"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  local t tb brc=0 SERVER BENCHBIN MODEL

  phase "environment"
  date -u
  command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
  { echo "== before ($(date -u +%FT%TZ))"; gpu_state; } | tee "$OUT/env.txt"
  { nvcc --version 2>&1 | tail -2; cmake --version | head -1; echo "ninja $(ninja --version)"; } || true
  "$PY" -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
  "$PY" -c 'import tokenizers; print("tokenizers", tokenizers.__version__)' || echo "no tokenizers: bytes-only vocab"
  echo "cores $(nproc), jobs $JOBS"; free -g | head -2; df -h "$WORK" "$BUILD_ROOT" | tail -2
  echo "LAYERS=$LAYERS DEPTHS=$DEPTHS TOKENS=$TOKENS REPS=$REPS BUDGET_S=$BUDGET_S NGL=$NGL THREADS=$THREADS CTX=$CTX"

  if [ -z "${LLAMA_SERVER:-}" ]; then
    ls -l "$CARRY" || { echo "run_device: $CARRY is missing: run pack.sh and carry bench/serve_bench/.carry"; return 1; }
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
    phase "build llama-server and llama-bench in the background (-j$JOBS; log: $OUT/build.log)"
    tb=$(date +%s)
    setsid bash "$REPO/bench/seed_limits/build_llama.sh" "$BUILD_ROOT/src/llama.cpp" "$BUILD_ROOT/build" "$JOBS" \
      "$BUILD_ROOT/build.times" "llama-server llama-bench" > "$OUT/build.log" 2>&1 &
    BUILD_PID=$!
  fi

  phase "write the model (Qwen3-30B-A3B shape, $LAYERS layers, Q8_0)"
  t=$(date +%s)
  MODEL="$WORK/qwen3moe-30b-a3b-q8_0-L$LAYERS.gguf"
  local sig; sig="$(sha256sum "$HERE/write_model.py" | cut -c1-16)-L$LAYERS"
  if [ -f "$MODEL" ] && [ "$(cat "$MODEL.sig" 2>/dev/null)" = "$sig" ]; then
    echo "reusing $MODEL (written by this write_model.py on this machine)"
  else
    "$PY" "$HERE/write_model.py" "$MODEL" --layers "$LAYERS" || { echo "run_device: write_model failed"; return 1; }
    echo "$sig" > "$MODEL.sig"
  fi
  ls -ls "$MODEL"
  took "write model" "$t"
  local size part
  size=$(stat -c %s "$MODEL"); part=$(( (size + 4 * 16777216 - 1) / (4 * 16777216) ))
  for i in 0 1 2 3; do
    dd if="$MODEL" of=/dev/null bs=16M skip=$((i * part)) count=$part status=none &
    WARM_PIDS="$WARM_PIDS $!"
  done
  t=$(date +%s)
  for p in $WARM_PIDS; do wait "$p" 2>/dev/null; done; WARM_PIDS=
  took "page-cache read of the model" "$t"

  if [ -z "${LLAMA_SERVER:-}" ]; then
    phase "wait for the build"
    t=$(date +%s)
    local last=0
    while kill -0 "$BUILD_PID" 2>/dev/null; do
      if [ "$(date +%s)" -ge $((DEADLINE - 90)) ]; then
        echo "run_device: the build is still running and no time is left: stopping it"
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
    tail -5 "$OUT/build.log"
    SERVER="$BUILD_ROOT/build/bin/llama-server" BENCHBIN="$BUILD_ROOT/build/bin/llama-bench"
  else
    SERVER="$LLAMA_SERVER" BENCHBIN="$LLAMA_BENCH"
  fi
  if [ "$brc" -ne 0 ] || [ ! -x "$SERVER" ] || [ ! -x "$BENCHBIN" ]; then
    echo "run_device: no llama-server or llama-bench: nothing measured"; return 1
  fi
  "$SERVER" --version 2>&1 | tail -2

  phase "start llama-server: ${SERVER_FLAGS[*]}"
  t=$(date +%s)
  setsid "$SERVER" -m "$MODEL" "${SERVER_FLAGS[@]}" --host 127.0.0.1 --port "$PORT" > "$OUT/server.log" 2>&1 &
  echo $! > "$WORK/server.pid"
  local ok=0
  for _ in $(seq 1 $((START_TIMEOUT * 2))); do
    kill -0 "$(cat "$WORK/server.pid")" 2>/dev/null || break
    if "$PY" -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2).status == 200 else 1)" 2>/dev/null; then
      ok=1; break
    fi
    sleep 0.5
  done
  took "server start" "$t"
  if [ "$ok" != 1 ]; then echo "run_device: the server did not become healthy"; tail -40 "$OUT/server.log"; return 1; fi
  grep -E "model type|model params|file size|offloaded|buffer size|n_ctx|flash_attn|n_ubatch|n_batch|system_info|CUDA0|tokenizer|n_vocab" "$OUT/server.log" | head -40
  gpu_state

  phase "rounds (rig bench and llama-bench interleaved) until t+$BUDGET_S s"
  t=$(date +%s)
  "$PY" "$HERE/rounds.py" --url "http://127.0.0.1:$PORT" --llama-bench "$BENCHBIN" --model "$MODEL" \
    --out "$OUT/rounds.jsonl" --deadline "$((DEADLINE - DIAG_S))" --rounds-max "$ROUNDS_MAX" --reps-per-round "$REPS" \
    --depths "$DEPTHS" --tokens "$TOKENS" --gpus "$GPUS" --lb-flags "$LB_FLAGS" --first-round "$FIRST_ROUND" \
    --py "$PY"
  local rrc=$?
  took rounds "$t"
  if [ "$DIAG_S" -gt 0 ] && [ $(( DEADLINE - $(date +%s) )) -ge 20 ]; then
    phase "diag.py: sampler cost in the server's decode; llama-bench pp with pp512 last"
    t=$(date +%s)
    timeout $(( DEADLINE - $(date +%s) )) "$PY" "$HERE/diag.py" --url "http://127.0.0.1:$PORT" \
      --llama-bench "$BENCHBIN" --model "$MODEL" --lb-flags "$LB_FLAGS" --out "$OUT/diag.jsonl" \
      --tokens "$TOKENS" --lb-prompts "$(echo "$DEPTHS" | tr ',' '\n' | sort -rn | paste -sd,)" \
      || echo "run_device: diag.py failed or ran out of time"
    took diag "$t"
  fi
  gpu_state
  echo "total $(now) s"
  return $rrc
}

main 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
