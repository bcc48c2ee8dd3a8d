#!/usr/bin/env bash
# Configure and build llama-server and llama-bench (bench/seed_limits/build_llama.sh, both targets): CUDA for sm_90 only, static libraries, Release, no UI download,
# no OpenSSL, no tests/examples/app; fatbin left uncompressed (quicker to build; the kernels that
# reach the GPU are the same).   build_llama.sh SRC_DIR BUILD_DIR JOBS TIMES_FILE
set -euo pipefail
src=$1 build=$2 jobs=$3 times=$4
t=$(date +%s)
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DGGML_CUDA_COMPRESSION_MODE=none \
  -DGGML_CCACHE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
echo "configure_s=$(( $(date +%s) - t ))" > "$times"
cmake --build "$build" --target llama-server llama-bench -j "$jobs"
echo "build_s=$(( $(date +%s) - t ))" >> "$times"
