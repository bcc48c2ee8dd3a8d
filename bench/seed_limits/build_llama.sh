#!/usr/bin/env bash
# Configure and build llama-server: CUDA for sm_90 only, static libraries, Release, no UI download,
# no OpenSSL, no tests/examples/app; fatbin left uncompressed (quicker to build; the kernels that
# reach the GPU are the same).   build_llama.sh SRC_DIR BUILD_DIR JOBS TIMES_FILE [TARGETS]
# (TARGETS: default llama-server; serve_bench builds "llama-server llama-bench")
set -euo pipefail
src=$1 build=$2 jobs=$3 times=$4 targets=${5:-llama-server}
t=$(date +%s)
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DGGML_CUDA_COMPRESSION_MODE=none \
  -DGGML_CCACHE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
echo "configure_s=$(( $(date +%s) - t ))" > "$times"
# shellcheck disable=SC2086 # the targets are words
cmake --build "$build" --target $targets -j "$jobs"
echo "build_s=$(( $(date +%s) - t ))" >> "$times"
