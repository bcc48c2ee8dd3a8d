#!/usr/bin/env bash
# The llama.cpp fidelity cases alone, on the GPU machine, with the llama-server an earlier call brought home
# (bench/tune_device/.carry/llama.cpp.xz.part*, llama.cpp.sha256): no build. Every case at --verbosity 4 (its
# log then has llama.cpp's own buffer sizes). Results: $OUT/fidelity.tar.gz. Stops at DEADLINE_S.
set -uo pipefail
T0=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
C="$REPO/bench/tune_device/.carry"
W=/tmp/fidq
OUT=${OUT:-$REPO/bench/fidelity/out}
DEADLINE=$(( T0 + ${DEADLINE_S:-330} ))
mkdir -p "$W/bin" "$W/cases" "$OUT"
export PYTHONPATH="$C/pydeps:$REPO" PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
cat "$C"/llama.cpp.xz.part* > "$W/llama.cpp.xz"
(cd "$W" && sed 's#  .*#  llama.cpp.xz#' "$C/llama.cpp.sha256" | sha256sum -c -) || exit 1
xz -dc "$W/llama.cpp.xz" > "$W/bin/llama-server" && chmod +x "$W/bin/llama-server"
nvcc -O2 -arch=sm_90 -o "$W/ballast" "$REPO/bench/seed_limits/ballast.cu" &
python3 "$REPO/bench/serve_bench/write_model.py" "$W/model.gguf" > "$W/model.log" 2>&1 &
for m in qwen35moe gpt-oss-20b; do python3 "$REPO/bench/fidelity/write_model.py" "$REPO/bench/fidelity/specs/$m.json" "$W/$m.gguf" & done
wait
"$W/ballast" 24576 0 > "$W/ballast.out" 2>&1 &
for _ in $(seq 1 120); do grep -q READY "$W/ballast.out" && break; sleep 0.5; done
nvidia-smi --query-gpu=memory.total,memory.used,memory.free --format=csv | tee "$W/cases/env.txt"
echo "[t+$(( $(date +%s) - T0 ))s] cases"
run() { python3 "$REPO/bench/fidelity/run_cases.py" --server "$W/bin/llama-server" --out "$W/cases" \
          --deadline "$DEADLINE" --server-arg=--verbosity --server-arg=4 "$@" 2>&1 | grep -v '\$ '
      tar -C "$W" -czf "$OUT/fidelity.tar.gz" cases; }
run --model "$W/gpt-oss-20b.gguf" --name gpt-oss-20b --ubatch 512 4096 --n-vocab 200000
run --model "$W/model.gguf" --name qwen3moe --n-vocab 7000
run --model "$W/qwen35moe.gguf" --name qwen35moe --cache-type q8_0 --ubatch 512 --n-vocab 240000
pkill -f "$W/ballast"
tar -C "$W" -czf "$OUT/fidelity.tar.gz" cases
echo "[t+$(( $(date +%s) - T0 ))s] done: $(ls "$W/cases" | grep -c json) cases"
