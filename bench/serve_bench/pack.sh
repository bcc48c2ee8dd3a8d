#!/usr/bin/env bash
# Run HERE (the controller): prepares bench/serve_bench/.carry/ (git-ignored), which the device run
# needs, so it has to be named in the device tool's `carry` (bench/serve_bench/.carry).
#
#   .carry/llama-src.tar.xz   vendor/llama.cpp of llama-cpp-python 0.3.36, pruned as
#                             bench/seed_limits/pack.sh prunes it (CMake files, ggml CPU+CUDA, src,
#                             include, common, vendor, tools), tools/llama-bench checked to be there
#
#   .carry/pydeps/gguf        the `gguf` package (pure Python) from the project's .venv: testbed/synth.py
#                             sizes tensors through llamarig.planner.ggml_types, which reads it; the
#                             device image has numpy, pyyaml and `tokenizers` (write_model.py's BPE)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CARRY="$HERE/.carry"
SDIST=${SDIST:-/var/cache/llamarig-testbed/dl/llama_cpp_python-0.3.36.tar.gz}
PREFIX=llama_cpp_python-0.3.36/vendor/llama.cpp
LIMIT=$((40 * 1000 * 1000))
VENV_SITE=${VENV_SITE:-$(ls -d "$HERE"/../../.venv/lib/python3*/site-packages 2>/dev/null | head -1)}

tmp=$(mktemp -d /tmp/servepack.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$CARRY"
echo "== extracting $PREFIX from $SDIST"
tar -xzf "$SDIST" -C "$tmp" "$PREFIX"
src="$tmp/$PREFIX"
( cd "$src"
  for f in * .[!.]*; do
    case "$f" in
      CMakeLists.txt|LICENSE|cmake|licenses|ggml|src|include|common|vendor|tools|scripts) ;;
      *) rm -rf "$f" ;;
    esac
  done
  find scripts -mindepth 1 ! -name ui-assets.cmake -exec rm -rf {} + 2>/dev/null || true
  for d in ggml/src/ggml-*/; do
    case "$d" in ggml/src/ggml-cpu/|ggml/src/ggml-cuda/) ;; *) rm -rf "$d" ;; esac
  done
  find tools/ui -mindepth 1 -maxdepth 1 ! -name CMakeLists.txt ! -name sources.cmake \
       ! -name ui.cpp.in ! -name ui.h.in -exec rm -rf {} +
  rm -rf tools/server/tests tools/server/bench tools/mtmd/tests tools/mtmd/test-*.* tools/*/README*.md
  find . -name '*.md' -delete
  test -f tools/llama-bench/llama-bench.cpp || { echo "pack: tools/llama-bench was pruned" >&2; exit 1; }
  grep -q llama-bench tools/CMakeLists.txt || { echo "pack: tools/CMakeLists.txt lost llama-bench" >&2; exit 1; }
)
echo "== packing $CARRY/llama-src.tar.xz"
tar -C "$tmp/llama_cpp_python-0.3.36/vendor" --sort=name --owner=0 --group=0 --numeric-owner \
    -cf - llama.cpp | xz -9e -T0 > "$CARRY/llama-src.tar.xz.tmp"
mv "$CARRY/llama-src.tar.xz.tmp" "$CARRY/llama-src.tar.xz"
size=$(stat -c %s "$CARRY/llama-src.tar.xz")
echo "   llama-src.tar.xz: $size bytes (limit $LIMIT)"
[ "$size" -lt "$LIMIT" ] || { echo "pack: llama-src.tar.xz is too big" >&2; exit 1; }
echo "== gguf into $CARRY/pydeps (from $VENV_SITE)"
rm -rf "$CARRY/pydeps"; mkdir -p "$CARRY/pydeps"
cp -r "$VENV_SITE/gguf" "$CARRY/pydeps/"
find "$CARRY/pydeps" -name '__pycache__' -prune -exec rm -rf {} +
du -sb "$CARRY/pydeps" | sed 's/^/   pydeps: /'
echo "== pack done: $(du -sb "$CARRY" | cut -f1) bytes in $CARRY"
