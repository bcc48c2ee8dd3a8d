#!/usr/bin/env bash
# Run HERE (the controller), from anywhere: prepares bench/tune_device/.carry/ (git-ignored; name it
# in the device tool's `carry`), what the GPU machine needs to build both forks (build_both.sh):
#
#   .carry/llama-src.tar.xz  mainline llama.cpp of llama-cpp-python 0.3.36 (+ pydeps/): made by
#                            bench/seed_limits/pack.sh, run with CARRY=.carry (it checks it too)
#   .carry/ik-src.tar.xz     vendor/ik_llama.cpp of ik-llama-cpp-python 0.1.5, plus the
#                            common/cmake/build-info-gen-cpp.cmake its sdist lacks (the testbed's
#                            testbed.sources.IK_BUILD_INFO_GEN), pruned to what a CPU+CUDA build of
#                            llama-server and llama-bench reads
#   .carry/pydeps/           pure-Python deps of `python -m llamarig` (seed_limits/pack.sh)
#
# Then it checks: ik's tree configures CPU-only and every C/C++ unit of both forks' llama-server and
# llama-bench preprocesses (no header pruned away, the generator steps run); both forks configure
# with CUDA exactly as build_both.sh does (its DRY=1 mode, against stand-in cuBLAS/driver libraries
# when the toolkit here lacks them); and it counts the ninja steps of each fork's targets.
# Nothing is compiled.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CARRY=${CARRY:-$HERE/.carry}
PYTHON=${PYTHON:-python3}
IK_NAME=ik_llama_cpp_python-0.1.5.tar.gz
IK_PREFIX=ik_llama_cpp_python-0.1.5/vendor/ik_llama.cpp
LIMIT=$((60 * 1000 * 1000))   # all of .carry
JOBS_HERE=$(nproc)

tmp=$(mktemp -d /tmp/tunepack.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$CARRY"

# ------------------------------------------------------------------ mainline (and pydeps)
echo "######## mainline: bench/seed_limits/pack.sh with CARRY=$CARRY"
CARRY=$CARRY bash "$REPO/bench/seed_limits/pack.sh"

# ------------------------------------------------------------------ ik_llama.cpp
echo "######## ik_llama.cpp"
# IK_GIT_DIR + IK_COMMIT: ik's tree at that commit of a git repository (git archive) instead of the sdist's
# vendored one (2026-12-03: the sdist's tree, of mid-April 2026, died on the H200 on its first prompt)
SDIST=${IK_SDIST:-}
if [ -n "${IK_GIT_DIR:-}" ]; then
  echo "== ik_llama.cpp at $IK_COMMIT from $IK_GIT_DIR (git archive)"
  mkdir -p "$tmp/$IK_PREFIX"
  # a mirror may lack its largest blobs (web pages, vocab GGUFs): those are left out, named (the prune
  # and the checks below say whether the build needed one)
  excludes=()
  while read -r _mode _type hash path; do
    git --git-dir="$IK_GIT_DIR" cat-file -e "$hash" 2>/dev/null || { excludes+=(":(exclude)$path"); echo "   (not in the repository: $path)"; }
  done < <(git --git-dir="$IK_GIT_DIR" ls-tree -r "$IK_COMMIT")
  git --git-dir="$IK_GIT_DIR" archive --format=tar "$IK_COMMIT" -- . "${excludes[@]}" | tar -x -C "$tmp/$IK_PREFIX"
  git --git-dir="$IK_GIT_DIR" rev-parse "$IK_COMMIT^{commit}" > "$tmp/$IK_PREFIX/.ik-commit"
elif [ -z "$SDIST" ]; then
  for c in /var/cache/llamarig-testbed/dl/$IK_NAME /tmp/ikdl/$IK_NAME; do
    if [ -s "$c" ] && gzip -t "$c" 2>/dev/null; then SDIST=$c; break; fi
  done
fi
if [ -z "$SDIST" ]; then
  echo "== pip download ik-llama-cpp-python==0.1.5 (sdist) into /tmp/ikdl"
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: ik-llama-cpp-python==0.1.5 -d /tmp/ikdl
  SDIST=/tmp/ikdl/$IK_NAME
fi
if [ -z "${IK_GIT_DIR:-}" ]; then
  echo "== extracting $IK_PREFIX from $SDIST"
  tar -xzf "$SDIST" -C "$tmp" "$IK_PREFIX"
fi
ik="$tmp/$IK_PREFIX"
before=$(du -sb "$ik" | cut -f1)

if [ -n "${IK_GIT_DIR:-}" ] && [ -e "$ik/common/cmake/build-info-gen-cpp.cmake" ]; then
  echo "== common/cmake/build-info-gen-cpp.cmake: the repository has it"
else
echo "== adding common/cmake/build-info-gen-cpp.cmake (testbed.sources.IK_BUILD_INFO_GEN)"
test ! -e "$ik/common/cmake/build-info-gen-cpp.cmake" || { echo "pack: the sdist has it now; drop this step" >&2; exit 1; }
( cd "$REPO" && "$PYTHON" -c '
import sys, pathlib
from testbed.sources import IK_BUILD_INFO_GEN
p = pathlib.Path(sys.argv[1]) / "common/cmake/build-info-gen-cpp.cmake"
p.parent.mkdir(parents=True, exist_ok=True)
p.write_text(IK_BUILD_INFO_GEN)' "$ik" )
fi

echo "== pruning what a CPU+CUDA build of llama-server and llama-bench does not read"
( cd "$ik"
  # top level: CMake files, licence, the libraries, and examples/ (llama-server and llama-bench live
  # there, and LLAMA_BUILD_EXAMPLES=ON adds every example directory and pocs/ at configure time)
  for f in * .[!.]*; do
    case "$f" in
      CMakeLists.txt|LICENSE|cmake|ggml|src|include|common|vendor|examples|pocs|scripts|.ik-commit) ;;
      *) rm -rf "$f" ;;
    esac
  done
  find scripts -mindepth 1 ! -name xxd.cmake -exec rm -rf {} +   # xxd.cmake embeds the server's pages
  # ggml/src: one CMakeLists for all backends; the other backends' sources are read only when enabled
  rm -rf ggml/src/kompute ggml/src/kompute-shaders ggml/src/vulkan-shaders ggml/src/ggml-sycl \
         ggml/src/ggml-cann ggml/src/ggml-metal.m ggml/src/ggml-metal.metal ggml/src/ggml-sycl.cpp \
         ggml/src/ggml-vulkan.cpp ggml/src/ggml-kompute.cpp ggml/src/ggml-cann.cpp
  # examples: keep the directories examples/CMakeLists.txt adds (configure needs their sources)
  keep=$(sed -n 's/^ *add_subdirectory(\([^)]*\)).*/\1/p' examples/CMakeLists.txt | sort -u)
  for d in examples/*; do
    n=${d#examples/}
    [ "$n" = CMakeLists.txt ] && continue
    grep -qx "$n" <<< "$keep" || rm -rf "$d"
  done
  rm -rf examples/sycl   # GGML_SYCL only
  # the server: only the pages its CMakeLists embeds (public/index.html.gz, public_llamacpp/{index_llamacpp.html.gz,loading.html})
  ( cd examples/server
    rm -rf public_legacy public_mikupad public_simplechat themes webui webui_llamacpp tests bench
    find public -mindepth 1 ! -name index.html.gz -exec rm -rf {} +
    find public_llamacpp -mindepth 1 ! -name index_llamacpp.html.gz ! -name loading.html -exec rm -rf {} + )
  find . \( -name '*.md' -o -name '*.sh' -o -name '*.py' -o -name '*.bat' \) -delete
  for f in examples/server/public/index.html.gz examples/server/public_llamacpp/index_llamacpp.html.gz \
           examples/server/public_llamacpp/loading.html examples/llama-bench/llama-bench.cpp \
           common/build-info.cpp.in common/cmake/build-info-gen-cpp.cmake scripts/xxd.cmake; do
    test -f "$f" || { echo "pack: $f was pruned" >&2; exit 1; }
  done
)
after=$(du -sb "$ik" | cut -f1)
echo "   $before -> $after bytes unpacked"

echo "== packing $CARRY/ik-src.tar.xz"
tar -C "$tmp/ik_llama_cpp_python-0.1.5/vendor" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime=2025-01-01T00:00:00Z -cf - ik_llama.cpp | xz -9e -T0 > "$CARRY/ik-src.tar.xz.tmp"
mv "$CARRY/ik-src.tar.xz.tmp" "$CARRY/ik-src.tar.xz"
echo "   ik-src.tar.xz: $(stat -c %s "$CARRY/ik-src.tar.xz") bytes"

# ------------------------------------------------------------------ checks
COMMON_CPU=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_CCACHE=OFF -DGGML_CUDA=OFF)
IK_CPU=("${COMMON_CPU[@]}" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=ON
        -DLLAMA_CURL=OFF -DLLAMA_SERVER_SSL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NCCL=OFF)
MAIN_CPU=("${COMMON_CPU[@]}" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF
          -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
          -DLLAMA_OPENSSL=OFF)

preprocess() {  # preprocess BUILD_DIR [SKIP_FILE]: generator steps, then every compile unit with -E
  local b=$1 skip=${2:-/dev/null}
  ( cd "$b"
    ninja -t commands bin/llama-server bin/llama-bench > cmds.txt
    # the generator steps (cmake -P: build-info, embedded pages) must run from the packed tree
    grep -E -- " -P [^ ]*(xxd|ui-assets|build-info-gen-cpp)\.cmake" cmds.txt > gen.txt || true
    sed "s/^/( /; s/\$/ )/" gen.txt | bash > gen.log 2>&1 || { cat gen.log; echo "pack: a generator step FAILED in $b" >&2; exit 1; }
    grep -- " -c " cmds.txt | grep -vxFf "$skip" > units.txt || true
    sed -E 's/ -o [^ ]+/ -E -o \/dev\/null/' units.txt | tr '\n' '\0' \
      | xargs -0 -r -P "$JOBS_HERE" -I{} bash -c '{} > /dev/null 2>> pp.err || echo FAIL >> pp.err'
    if [ -s pp.err ]; then head -20 pp.err; echo "pack: preprocessing FAILED in $b" >&2; exit 1; fi
    echo "   $(grep -c . units.txt || true) translation units preprocess ($(grep -c -- ' -c ' cmds.txt) in all); $(grep -c . gen.txt || true) generator steps ran"
  )
}

chk="$tmp/check"; mkdir -p "$chk/src"
for t in llama-src ik-src; do xz -dc "$CARRY/$t.tar.xz" | tar -C "$chk/src" -xf -; done
export GIT_CEILING_DIRECTORIES=$chk/src

echo "== check: ik_llama.cpp configures CPU only"
cmake -S "$chk/src/ik_llama.cpp" -B "$chk/ik-cpu" "${IK_CPU[@]}" > "$chk/ik-cpu.log" 2>&1 \
  || { tail -40 "$chk/ik-cpu.log"; echo "pack: ik CPU configure FAILED" >&2; exit 1; }
grep -E "^-- (Configuring done|Generating done)" "$chk/ik-cpu.log" | sed 's/^/   /'
if grep -q "CMake Warning" "$chk/ik-cpu.log"; then
  grep -A3 "CMake Warning" "$chk/ik-cpu.log" | sed 's/^/   (warning) /' | head -20
fi
echo "== check: every C/C++ unit of ik's llama-server and llama-bench preprocesses"
preprocess "$chk/ik-cpu"
echo "== check: llama.cpp's llama-bench units preprocess too (seed_limits/pack.sh did llama-server's)"
cmake -S "$chk/src/llama.cpp" -B "$chk/main-cpu" "${MAIN_CPU[@]}" > "$chk/main-cpu.log" 2>&1 \
  || { tail -40 "$chk/main-cpu.log"; echo "pack: mainline CPU configure FAILED" >&2; exit 1; }
( cd "$chk/main-cpu" && ninja -t commands bin/llama-server | grep -- " -c " > server-units.txt )
preprocess "$chk/main-cpu" "$chk/main-cpu/server-units.txt"

echo "== check: both forks configure with CUDA as build_both.sh does (DRY=1)"
extra=()
cudalib=$(dirname "$(readlink -f "$(command -v nvcc)")")/../lib64
if command -v nvcc >/dev/null 2>&1; then
  if ! ls "$cudalib"/libcublas.so* >/dev/null 2>&1 || ! ls "$cudalib"/stubs/libcuda.so >/dev/null 2>&1; then
    echo "   (toolkit here lacks cuBLAS / the driver stub: configuring against empty stand-in libraries)"
    mkdir -p "$tmp/stub"; echo 'void llamarig_stub(void){}' > "$tmp/stub/s.c"
    for l in cublas cublasLt cuda; do gcc -shared -fPIC -o "$tmp/stub/lib$l.so" "$tmp/stub/s.c"; done
    extra=(-DCUDA_cublas_LIBRARY="$tmp/stub/libcublas.so" -DCUDA_cublasLt_LIBRARY="$tmp/stub/libcublasLt.so"
           -DCUDA_cuda_driver_LIBRARY="$tmp/stub/libcuda.so")
  fi
  DRY=1 CARRY="$CARRY" EXTRA_CMAKE_ARGS="${extra[*]}" \
    bash "$HERE/build_both.sh" "$chk/dry-src" "$chk/dry-build" 16 > "$chk/dry.log" 2>&1 \
    || { cat "$chk/dry.log"; tail -n 30 "$chk"/dry-build/*.log; echo "pack: build_both.sh DRY=1 FAILED" >&2; exit 1; }
  sed 's/^/   /' "$chk/dry.log"
  for fork in llama.cpp ik_llama.cpp; do
    b="$chk/dry-build/$fork"
    grep -E "CUDA Toolkit|Using CUDA architectures|Using CMAKE_CUDA_ARCHITECTURES|Including CUDA backend|CUDA found|-- Generating done" \
      "$chk/dry-build/$fork.log" | sort -u | sed "s/^/   $fork: /"
    for v in GGML_NATIVE GGML_CUDA_COMPRESSION_MODE GGML_NCCL GGML_CUDA_NCCL GGML_CUDA_FA_ALL_QUANTS GGML_IQK_FA_ALL_QUANTS BUILD_SHARED_LIBS; do
      grep -h "^$v:" "$b/CMakeCache.txt" || true
    done | tr '\n' ' ' | sed "s/^/   $fork cache: /"; echo
    grep -q -- "-compress-mode=none" "$b/build.ninja" && echo "   $fork: nvcc gets -compress-mode=none"
    for tg in llama-server llama-bench "llama-server llama-bench"; do
      # shellcheck disable=SC2086
      n_all=$(ninja -C "$b" -n $tg | grep -c '^\[' || true)
      # shellcheck disable=SC2086
      n_cu=$(ninja -C "$b" -n $tg | grep -c '\.cu\.o' || true)
      echo "   $fork [$tg]: $n_all ninja steps, $n_cu of them CUDA objects"
    done
  done
else
  echo "   (no nvcc here: CUDA configure skipped)"
fi

total=$(du -sb "$CARRY" | cut -f1)
echo "== pack done: $total bytes in $CARRY (limit $LIMIT)"
ls -l "$CARRY" | sed 's/^/   /'
if [ "$total" -ge "$LIMIT" ]; then echo "pack: the carry is too big" >&2; exit 1; fi
