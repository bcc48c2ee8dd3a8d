#!/usr/bin/env bash
# One device session's work, in the background (run_device.sh starts it once and follows it):
#
#   1. both CUDA builds (build_both.sh; ik at a lower priority, so that llama.cpp ends first), the three
#      models (the Qwen3-30B-A3B-shaped Q8_0 of serve_bench, and the fidelity models from
#      bench/fidelity/specs: a Qwen3.5-35B-A3B-shaped hybrid and a gpt-oss-20b-shaped model), the ballast;
#   2. once llama.cpp is built: the ballast holds all of GPU 0 but KEEP_MIB, then the fidelity cases on
#      llama.cpp (bench/fidelity/run_cases.py), while ik_llama.cpp still builds (memory does not depend on
#      the CPU's load);
#   3. once ik_llama.cpp is built: which of its option variants serves a prompt at all (IK_VARIANTS,
#      -cuda fusion=0 first: lib.sh's ik_serving_variant), its fidelity cases with that variant, then the tune
#      (run_tune.py, ik's candidates with that variant), alone on the machine; before each, every process
#      but the ballast that holds the GPU is killed (lib.sh's gpu_clean).
#
# Everything lands in WORK (/tmp/tunedev); WORK/session.log says where it is; WORK/session.done at the end.
# Power limits and clocks are never touched.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/bench/tune_device"
WORK=${WORK:-/tmp/tunedev}
B="$WORK/build"
KEEP_MIB=${KEEP_MIB:-24576}
CARRY=${CARRY:-$HERE/.carry}   # what the device call carried (pack.sh)
TUNE_MINUTES=${TUNE_MINUTES:-8}
MAIN_CASES=${MAIN_CASES-qwen3moe qwen35moe gpt-oss-20b}   # llama.cpp's fidelity cases (run while ik builds)
# ik_llama.cpp's options tried in turn, one variant a line, until one serves (an empty line: its defaults)
# (its server's switches: -no-ooae offload only active experts, -cuda fusion=0|graphs=0|offload-batch-size=N,
# -no-gr graph reuse, -no-fmoe/-no-fug/-no-mmad the fused ops; 2026-12-03 it died in a CPY with its defaults;
# no flag a typed key sets, such as -fa: the plan is made for the key, and validation refuses it in extra_args).
# -cuda fusion=0 first: at the pinned ik (8337e4cd, CUDA 13, sm_90) its defaults and -no-ooae died on the first
# prompt (illegal memory access in ggml_backend_cuda_synchronize), -cuda fusion=0 served (bench/results/
# fidelity-h200/run4); its defaults second, should a rebuilt tree serve with them.
IK_VARIANTS=${IK_VARIANTS-$'-cuda fusion=0\n\n-no-ooae\n-cuda offload-batch-size=100000\n-no-gr\n-no-ooae -no-fmoe -no-fug -no-mmad -no-gr -cuda fusion=0,graphs=0'}
# the session's end (seconds after it starts): ik's cases start only while TUNE_MIN_MINUTES are left after
# them, and the tune gets what is left, at most TUNE_MINUTES (the device's 30 minutes less the machine's start)
SESSION_S=${SESSION_S:-1500}
TUNE_MIN_MINUTES=${TUNE_MIN_MINUTES:-6}
# the sixth try's lesson (bench/tune_device/README.md): decode's winner is ik's repack with all cores, a
# combination formed after round 1, so it needs rounds enough for 10 runs of its own
TUNE_ARGS=${TUNE_ARGS:---depth 1024 --tokens 64 --repetitions 5 --rounds 4 --finalists 2 --axes threads,threads_batch,ubatch,fork_options --ubatches 1024 --drop grouped_expert_routing,merge_qkv,^ubatch_size --load-timeout 240}
export PYTHONPATH="$CARRY/pydeps:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
T0=$(date +%s)
END=$((T0 + SESSION_S))
say() { echo "[session t+$(( $(date +%s) - T0 ))s] $*"; }
mkdir -p "$WORK/fidelity"

say "start: $(nvidia-smi --query-gpu=name,memory.total,memory.used,power.limit --format=csv,noheader); $(nproc) cores"
# A fork's llama-server an earlier session brought home (.carry/FORK.xz.part*, FORK.sha256) is unpacked
# instead of built: llama.cpp's saves about 4 minutes of device time, ik_llama.cpp's 12. (Both binaries and
# ik's sources may not fit one call's 64 MiB carry: a fork without its binary there is built.)
SKIP_MAIN=0 SKIP_IK=0
for fork in llama.cpp ik_llama.cpp; do
  ls "$CARRY/$fork.xz.part"* > /dev/null 2>&1 || continue
  mkdir -p "$B/$fork/bin"
  cat "$CARRY/$fork.xz.part"* > "$WORK/$fork.xz"
  if (cd "$WORK" && sed "s#  .*#  $fork.xz#" "$CARRY/$fork.sha256" | sha256sum -c - > /dev/null) &&
     xz -dc "$WORK/$fork.xz" > "$B/$fork/bin/llama-server" && chmod +x "$B/$fork/bin/llama-server"; then
    touch "$WORK/$fork.sent"
    case $fork in llama.cpp) SKIP_MAIN=1 ;; *) SKIP_IK=1 ;; esac
    say "$fork's llama-server unpacked from the carry"
  else
    say "$fork's carried llama-server does not match its sha256: built instead"
  fi
done
# Which fork is awaited first: the carried one; else llama.cpp when it has fidelity cases to run while ik
# builds, else ik (the longer build, on the critical path: mainline is needed only by the tune) at full
# priority, mainline at nice 19 in the cycles ik leaves idle.
if [ "$SKIP_MAIN" = 0 ] && { [ "$SKIP_IK" = 1 ] || [ -z "${MAIN_CASES// /}" ]; }; then
  FIRST=ik NICE="IK_NICE=0 MAIN_NICE=19"
else
  FIRST=main NICE="IK_NICE=19 MAIN_NICE=0"
fi
# shellcheck disable=SC2086 # NICE is two assignments
env $NICE SKIP_MAIN=$SKIP_MAIN SKIP_IK=$SKIP_IK MAIN_JOBS=$(nproc) IK_JOBS=$(nproc) setsid bash "${BUILD_BOTH:-$HERE/build_both.sh}" "$WORK/src" "$B" "$(nproc)" \
  > "$WORK/build_both.out" 2>&1 < /dev/null &
BUILD_PID=$!
built() {  # built FORK: waits for FORK's build to end; false when it failed (or build_both.sh died first)
  until [ -f "$B/$1.done" ]; do
    kill -0 "$BUILD_PID" 2>/dev/null || [ -f "$B/$1.done" ] || { say "build_both.sh ended without $1: $(tail -5 "$WORK/build_both.out")"; return 1; }
    sleep 5
  done
  say "$1 build: $(tr '\n' ' ' < "$B/$1.done")"
  grep -qx rc=0 "$B/$1.done" || { say "$1 did not build:"; tail -30 "$B/$1.log"; return 1; }
}
nvcc -O2 -arch=sm_90 -o "$WORK/ballast" "$REPO/bench/seed_limits/ballast.cu" > "$WORK/ballast.build" 2>&1 || say "ballast build FAILED"
python3 "$REPO/bench/serve_bench/write_model.py" "$WORK/model.gguf" > "$WORK/model.log" 2>&1 || say "model FAILED: $(tail -3 "$WORK/model.log")"
for m in qwen35moe gpt-oss-20b; do
  case " $MAIN_CASES " in *" $m "*) ;; *) continue ;; esac
  python3 "$REPO/bench/fidelity/write_model.py" "$REPO/bench/fidelity/specs/$m.json" "$WORK/$m.gguf" || say "$m FAILED"
done
say "models and ballast: $(ls -s "$WORK"/*.gguf | tr '\n' ' ')"

setsid "$WORK/ballast" "$KEEP_MIB" 0 > "$WORK/ballast.out" 2> "$WORK/ballast.err" < /dev/null &
BALLAST_PID=$!   # setsid execs it (a background job of a script leads no process group)
for _ in $(seq 1 120); do grep -q READY "$WORK/ballast.out" 2>/dev/null && break; sleep 0.5; done
grep -q READY "$WORK/ballast.out" || { say "the ballast did not get READY: $(cat "$WORK/ballast.err")"; touch "$WORK/session.done"; exit 1; }
nvidia-smi --query-gpu=memory.total,memory.used,memory.free --format=csv | tee "$WORK/env-before.txt"
kill -0 "$BALLAST_PID" 2>/dev/null || { say "the ballast is gone: $(cat "$WORK/ballast.err")"; touch "$WORK/session.done"; exit 1; }
BASE_USED=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)

# ggml's abort forks gdb for a backtrace; here gdb attaching to a CUDA process hangs, and the dead server's
# GPU memory stays held through the device files gdb inherited (2026-12-03: 22.7 GiB, every later candidate
# out of memory). A gdb that fails at once makes ggml print its own backtrace and abort; run_cases.py's
# stacks of a hung server still use the real one (STACKS_GDB).
mkdir -p "$WORK/nogdb" && printf '#!/bin/sh\nexit 1\n' > "$WORK/nogdb/gdb" && chmod +x "$WORK/nogdb/gdb"
STACKS_GDB=$(command -v gdb || echo gdb); export STACKS_GDB PATH="$WORK/nogdb:$PATH"
# shellcheck source=bench/tune_device/lib.sh
. "$HERE/lib.sh"   # gpu_clean, ik_serving_variant

fid() {  # fid FORK SERVER NAME MODEL [run_cases options]; FID_OUT: another folder than WORK/fidelity
  local fork=$1 server=$2 name=$3 model=$4; shift 4
  say "fidelity: $fork $name $*"
  python3 "$REPO/bench/fidelity/run_cases.py" --fork "$fork" --server "$server" --model "$model" --name "$name" \
    --out "${FID_OUT:-$WORK/fidelity}" "$@" >> "$WORK/fidelity.log" 2>&1
}
MAIN="$B/llama.cpp/bin/llama-server" IK="$B/ik_llama.cpp/bin/llama-server"

main_work() {  # llama.cpp built (or carried): its fidelity cases
  built llama.cpp || { touch "$WORK/session.done"; exit 1; }
  for c in $MAIN_CASES; do
    case $c in
      qwen3moe) fid llama.cpp "$MAIN" qwen3moe "$WORK/model.gguf" --n-vocab 7000 ;;
      qwen35moe) fid llama.cpp "$MAIN" qwen35moe "$WORK/qwen35moe.gguf" --cache-type q8_0 --ubatch 512 --n-vocab 240000 ;;
      gpt-oss-20b) fid llama.cpp "$MAIN" gpt-oss-20b "$WORK/gpt-oss-20b.gguf" --ubatch 512 --n-vocab 200000 ;;
    esac
  done
  rm -f "$WORK/qwen35moe.gguf" "$WORK/gpt-oss-20b.gguf"   # their page cache back to the machine
  say "llama.cpp fidelity done"
}

ik_work() {  # ik_llama.cpp built (or carried): the variant that serves, its fidelity cases
  if built ik_llama.cpp; then
    # Does ik serve a prompt at all, and with which of its options off? (2026-12-03: its first prompt died with
    # "CUDA error: an illegal memory access" at its defaults, and served with -cuda fusion=0.) The first variant that
    # answers a 1000-token prompt at the fidelity's first case is kept for ik's cases and its tune candidates.
    ik_serving_variant
    if [ -n "$IK_FOUND" ]; then
      echo "$IK_ARGS" > "$WORK/ik_args.txt"
      words=(); for w in $IK_ARGS; do words+=("--server-arg=$w"); done
      gpu_clean
      fid ik_llama.cpp "$IK" qwen3moe "$WORK/model.gguf" --n-vocab 7000 --deadline $((END - 60 * TUNE_MIN_MINUTES)) \
        "${words[@]}"
      say "ik_llama.cpp fidelity done (with [${IK_ARGS:-its defaults}])"
    else
      say "ik_llama.cpp served no variant: no ik cases, the tune on llama.cpp alone"
      IK=
    fi
  else
    IK=
  fi
}

# The fork awaited first (FIRST, above) has its work done while the other builds (memory does not depend on
# the CPU's load); the tune waits for both.
IK_ARGS=
if [ "$FIRST" = ik ]; then ik_work; main_work; else main_work; ik_work; fi
gpu_clean

left=$(( (END - $(date +%s)) / 60 ))
[ "$left" -lt "$TUNE_MINUTES" ] && TUNE_MINUTES=$(( left > 2 ? left : 2 ))
say "tune: $TUNE_ARGS (minutes $TUNE_MINUTES)"
ik_words=(); for w in $IK_ARGS; do ik_words+=("--ik-arg=$w"); done
# shellcheck disable=SC2086
python3 "$HERE/run_tune.py" --model "$WORK/model.gguf" --llama "$MAIN" ${IK:+--ik "$IK"} --out "$WORK/tune" \
  --minutes "$TUNE_MINUTES" $TUNE_ARGS "${ik_words[@]}" > "$WORK/tune.log" 2>&1
say "tune ended: $?"
kill "$BALLAST_PID" 2>/dev/null || true
touch "$WORK/session.done"
say "session done"
