#!/usr/bin/env bash
# Run HERE (the controller), from anywhere: prepares bench/.carry/, which the device run needs and
# which git ignores (bench/.gitignore), so it has to be named in the device tool's `carry`.
#
#   bench/.carry/llama-src.tar.xz   vendor/llama.cpp of llama-cpp-python 0.3.36, only what a CUDA
#                                   build of llama-server needs (CMake files, ggml CPU+CUDA, src,
#                                   include, common, vendor, tools)
#   bench/.carry/pydeps/            pure-Python packages `python -m llamarig plan` imports that the
#                                   device's Python (3.12 + numpy) lacks: gguf, jinja2, markupsafe,
#                                   cerberus, yaml (C extensions left out; each has a Python fallback)
#
# Then it checks the packed tree: a CPU-only CMake configure (-DGGML_CUDA=OFF), and a CUDA configure
# too when nvcc is installed here (configure only, nothing is compiled).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CARRY=${CARRY:-$REPO/bench/.carry}   # serve_bench packs the same into its own .carry
SDIST=${SDIST:-/var/cache/llamarig-testbed/dl/llama_cpp_python-0.3.36.tar.gz}
PREFIX=llama_cpp_python-0.3.36/vendor/llama.cpp
VENV_SITE=${VENV_SITE:-$(ls -d "$REPO"/.venv/lib/python3*/site-packages 2>/dev/null | head -1)}
LIMIT=$((40 * 1000 * 1000))

tmp=$(mktemp -d /tmp/seedpack.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$CARRY"

echo "== extracting $PREFIX from $SDIST"
tar -xzf "$SDIST" -C "$tmp" "$PREFIX"
src="$tmp/$PREFIX"
before=$(du -sb "$src" | cut -f1)

echo "== pruning what a llama-server build does not read"
# top level: keep CMakeLists.txt, LICENSE, cmake/, licenses/, ggml/, src/, include/, common/, vendor/,
# tools/, scripts/ui-assets.cmake
( cd "$src"
  for f in * .[!.]*; do
    case "$f" in
      CMakeLists.txt|LICENSE|cmake|licenses|ggml|src|include|common|vendor|tools|scripts) ;;
      *) rm -rf "$f" ;;
    esac
  done
  find scripts -mindepth 1 ! -name ui-assets.cmake -exec rm -rf {} + 2>/dev/null || true
  # ggml: only the CPU and CUDA backends (the others are add_subdirectory'd only when enabled)
  for d in ggml/src/ggml-*/; do
    case "$d" in ggml/src/ggml-cpu/|ggml/src/ggml-cuda/) ;; *) rm -rf "$d" ;; esac
  done
  # the web UI: CMake needs only its CMakeLists, sources.cmake and the two templates
  find tools/ui -mindepth 1 -maxdepth 1 ! -name CMakeLists.txt ! -name sources.cmake \
       ! -name ui.cpp.in ! -name ui.h.in -exec rm -rf {} +
  # tests, benches, sample media and docs inside tools/
  rm -rf tools/server/tests tools/server/bench tools/mtmd/tests tools/mtmd/test-*.* tools/*/README*.md
  find . -name '*.md' -delete
  test -f tools/llama-bench/llama-bench.cpp || { echo "pack: tools/llama-bench was pruned" >&2; exit 1; }
  grep -q llama-bench tools/CMakeLists.txt || { echo "pack: tools/CMakeLists.txt lost llama-bench" >&2; exit 1; }
)
after=$(du -sb "$src" | cut -f1)
echo "   $before -> $after bytes unpacked"

echo "== packing $CARRY/llama-src.tar.xz"
tar -C "$tmp/llama_cpp_python-0.3.36/vendor" --sort=name --owner=0 --group=0 --numeric-owner \
    -cf - llama.cpp | xz -9e -T0 > "$CARRY/llama-src.tar.xz.tmp"
mv "$CARRY/llama-src.tar.xz.tmp" "$CARRY/llama-src.tar.xz"
size=$(stat -c %s "$CARRY/llama-src.tar.xz")
echo "   llama-src.tar.xz: $size bytes (limit $LIMIT)"
if [ "$size" -ge "$LIMIT" ]; then echo "pack: llama-src.tar.xz is too big" >&2; exit 1; fi

echo "== pure-Python deps into $CARRY/pydeps (from $VENV_SITE)"
rm -rf "$CARRY/pydeps"; mkdir -p "$CARRY/pydeps"
for p in gguf jinja2 markupsafe cerberus yaml; do
  cp -r "$VENV_SITE/$p" "$CARRY/pydeps/"
done
find "$CARRY/pydeps" \( -name '__pycache__' -o -name '*.so' -o -name '*.c' \) -prune -exec rm -rf {} +
du -sb "$CARRY/pydeps" | sed 's/^/   pydeps: /'

echo "== check: the packed tree configures (CPU only)"
chk="$tmp/check"; mkdir -p "$chk"
xz -dc "$CARRY/llama-src.tar.xz" | tar -C "$chk" -xf -
COMMON=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DGGML_CCACHE=OFF)   # as build_llama.sh
cmake -S "$chk/llama.cpp" -B "$chk/build-cpu" "${COMMON[@]}" -DGGML_CUDA=OFF > "$chk/cpu.log" 2>&1 \
  || { tail -40 "$chk/cpu.log"; echo "pack: CPU configure FAILED" >&2; exit 1; }
grep -E "^-- (Configuring done|Generating done|Build files)" "$chk/cpu.log" | sed 's/^/   /'
grep -q "llama-server" "$chk/build-cpu/build.ninja" && echo "   build.ninja has the llama-server target"
echo "== check: every C/C++ unit of llama-server preprocesses (no header was dropped), UI step runs"
( cd "$chk/build-cpu"
  ninja -t commands bin/llama-server > cmds.txt
  grep "ui-assets.cmake" cmds.txt | bash > ui.log 2>&1 || { cat ui.log; exit 1; }
  grep -- " -c " cmds.txt | sed -E 's/ -o [^ ]+/ -E -o \/dev\/null/' | tr '\n' '\0' \
    | xargs -0 -P "$(nproc)" -I{} bash -c '{} > /dev/null 2>> pp.err || echo FAIL >> pp.err'
  n=$(grep -c -- " -c " cmds.txt)
  if [ -s pp.err ]; then head -20 pp.err; echo "pack: preprocessing FAILED" >&2; exit 1; fi
  echo "   $n translation units preprocess; $(grep -o 'embedded [0-9]* assets' ui.log)"
) || exit 1
if command -v nvcc >/dev/null 2>&1; then
  echo "== check: CUDA configure (nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_90), as build_llama.sh does"
  CUDA=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DGGML_CUDA_COMPRESSION_MODE=none)
  if ! cmake -S "$chk/llama.cpp" -B "$chk/build-cuda" "${COMMON[@]}" "${CUDA[@]}" > "$chk/cuda.log" 2>&1; then
    # a toolkit without cuBLAS or the driver stub (as here) cannot generate; link stand-ins only to
    # let CMake generate, which proves every file ggml-cuda's CMakeLists globs and names is packed
    echo "   (toolkit lacks CUDA::cublas / cuda_driver here: configuring again against empty stand-in libraries)"
    mkdir -p "$tmp/stub"; echo 'void llamarig_stub(void){}' > "$tmp/stub/s.c"
    for l in cublas cublasLt cuda; do gcc -shared -fPIC -o "$tmp/stub/lib$l.so" "$tmp/stub/s.c"; done
    rm -rf "$chk/build-cuda"
    cmake -S "$chk/llama.cpp" -B "$chk/build-cuda" "${COMMON[@]}" "${CUDA[@]}" \
      -DCUDA_cublas_LIBRARY="$tmp/stub/libcublas.so" -DCUDA_cublasLt_LIBRARY="$tmp/stub/libcublasLt.so" \
      -DCUDA_cuda_driver_LIBRARY="$tmp/stub/libcuda.so" > "$chk/cuda.log" 2>&1 \
      || { tail -20 "$chk/cuda.log"; echo "pack: CUDA configure FAILED" >&2; exit 1; }
  fi
  grep -E "^-- (Configuring done|Generating done)|Including CUDA backend|Using CMAKE_CUDA_ARCHITECTURES" "$chk/cuda.log" | sed 's/^/   /'
  n_cu=$(ninja -C "$chk/build-cuda" -n llama-server | grep -c '\.cu\.o' || true)
  n_all=$(ninja -C "$chk/build-cuda" -n llama-server | grep -c '^\[' || true)
  echo "   llama-server: $n_all build steps, $n_cu of them CUDA objects"
fi
echo "== pack done: $(du -sb "$CARRY" | cut -f1) bytes in $CARRY"
