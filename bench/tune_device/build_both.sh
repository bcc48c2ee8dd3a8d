#!/usr/bin/env bash
# Build llama.cpp and ik_llama.cpp side by side on the GPU machine, from the carried sources
# (bench/tune_device/.carry/{llama-src,ik-src}.tar.xz, made by pack.sh):
#
#   build_both.sh SRC_ROOT BUILD_ROOT JOBS
#
# unpacks SRC_ROOT/llama.cpp and SRC_ROOT/ik_llama.cpp, then configures and builds both AT ONCE,
# targets llama-server and llama-bench, CUDA sm_90 only, Release, static, no OpenSSL/curl, no ccache,
# fatbin uncompressed:
#   mainline  BUILD_ROOT/llama.cpp      through bench/seed_limits/build_llama.sh (its flags)
#   ik        BUILD_ROOT/ik_llama.cpp   flags below (ik's option names differ, see README.md)
# Each writes BUILD_ROOT/FORK.log while it runs and BUILD_ROOT/FORK.done when it ends
# ("rc=N", "seconds=S", "configure_s=", "build_s="); BUILD_ROOT/all.done follows when both have.
# Binaries: BUILD_ROOT/FORK/bin/llama-server, BUILD_ROOT/FORK/bin/llama-bench.
#
# Made to be started detached:  setsid nohup bash bench/tune_device/build_both.sh S B 16 >B.out 2>&1 &
# and polled with:               bash bench/tune_device/build_both.sh --status B
#
# Jobs: ik's CUDA template instances are the long pole (219 CUDA objects to mainline's 144, 10-15
# min on 16 cores alone; mainline alone ~5 min), so ik starts first with IK_JOBS (default JOBS) and
# mainline beside it with MAIN_JOBS (default JOBS/2): ik gets 2/3 of the cores while both run, and
# all of them once mainline is done (ninja cannot hand jobs over, and a fixed split such as
# JOBS/4 + 3*JOBS/4 leaves a quarter of the machine idle after mainline ends).
# Environment: DRY=1 prints the cmake commands and runs only the configure steps (no compiling);
# EXTRA_CMAKE_ARGS (words) go to both configures (pack.sh passes stand-in cuBLAS/driver libraries);
# IK_CMAKE_ARGS to ik's only; CARRY (default bench/tune_device/.carry).
set -uo pipefail
if [ "${1:-}" = --status ] && [ $# -eq 2 ]; then
  # build_both.sh --status BUILD_ROOT: one line a fork; exit 0 both built, 1 one failed, 3 still running
  b=$2 st=0
  for fork in ik_llama.cpp llama.cpp; do
    if [ -f "$b/$fork.done" ]; then
      echo "$fork: done $(tr '\n' ' ' < "$b/$fork.done")"
      grep -qx "rc=0" "$b/$fork.done" || { st=1; tail -n 15 "$b/$fork.log" | sed "s/^/  $fork| /"; }
    elif [ -f "$b/$fork.log" ]; then
      echo "$fork: running, at $(grep -o '^\[[0-9]*/[0-9]*\]' "$b/$fork.log" | tail -1) ($(( $(date +%s) - $(stat -c %Y "$b/$fork.log") )) s since its log last changed)"
      [ "$st" = 1 ] || st=3
    else
      echo "$fork: not started (no $b/$fork.log)"; [ "$st" = 1 ] || st=3
    fi
  done
  [ -f "$b/all.done" ] && echo "all done: $(tr '\n' ' ' < "$b/all.done")"
  exit "$st"
fi
if [ $# -ne 3 ]; then echo "usage: build_both.sh SRC_ROOT BUILD_ROOT JOBS | build_both.sh --status BUILD_ROOT" >&2; exit 2; fi
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CARRY=${CARRY:-$HERE/.carry}
mkdir -p "$1" "$2"
SRC_ROOT=$(cd "$1" && pwd) BUILD_ROOT=$(cd "$2" && pwd) JOBS=$3
IK_JOBS=${IK_JOBS:-$JOBS}
MAIN_JOBS=${MAIN_JOBS:-$(( JOBS / 2 > 0 ? JOBS / 2 : 1 ))}
DRY=${DRY:-0}
TARGETS="llama-server llama-bench"
read -r -a EXTRA <<< "${EXTRA_CMAKE_ARGS:-}"
read -r -a IK_EXTRA <<< "${IK_CMAKE_ARGS:-}"
for f in llama-src.tar.xz ik-src.tar.xz; do
  [ -s "$CARRY/$f" ] || { echo "build_both: no $CARRY/$f (run bench/tune_device/pack.sh)" >&2; exit 2; }
done
# the unpacked trees are no git checkouts: keep git (build-info) from reporting an enclosing repo's commit
export GIT_CEILING_DIRECTORIES=$SRC_ROOT

# ik_llama.cpp's options, read from its CMakeLists (ggml/CMakeLists.txt, examples/server/...):
# llama-server and llama-bench live under examples/, built only with LLAMA_BUILD_EXAMPLES=ON (no
# LLAMA_BUILD_TOOLS); NCCL is GGML_NCCL (default ON), not mainline's GGML_CUDA_NCCL; TLS is
# LLAMA_SERVER_SSL (default OFF) and LLAMA_CURL (default OFF); LLAMA_OPENSSL only gates cpp-httplib.
# GGML_CUDA_FA_ALL_QUANTS (OFF) and GGML_IQK_FA_ALL_QUANTS (ON) stay at ik's defaults, as on a rig.
IK_ARGS=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON
         -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NCCL=OFF -DGGML_CUDA_COMPRESSION_MODE=none
         -DGGML_CCACHE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=ON
         -DLLAMA_CURL=OFF -DLLAMA_SERVER_SSL=OFF -DLLAMA_OPENSSL=OFF)
# ik sets CMAKE_CXX_STANDARD 20 and no CUDA standard, so CMake compiles its .cu files as C++20, a
# dialect older CMakes (3.25 here) do not know for nvcc ("Target ggml requires the language dialect
# CUDA20"): there, C++17 for CUDA, the dialect ik itself sets on MSVC (CUDA_STANDARD 17)
REAL_CMAKE=$(command -v cmake)
cmake_root=$(f=$(mktemp); echo 'message("${CMAKE_ROOT}")' > "$f"; "$REAL_CMAKE" -P "$f" 2>&1; rm -f "$f")
if ! grep -qs CMAKE_CUDA20_STANDARD_COMPILE_OPTION "$cmake_root/Modules/Compiler/NVIDIA-CUDA.cmake"; then
  IK_ARGS+=(-DCMAKE_CUDA_STANDARD=17)
  echo "build_both: CMake $("$REAL_CMAKE" --version | sed -n '1s/.* //p') knows no C++20 for nvcc: ik's .cu files as C++17"
fi

# DRY=1: a cmake on PATH that prints every call, adds EXTRA_CMAKE_ARGS to configures and skips --build
# (so mainline's dry run goes through build_llama.sh's own flags, unchanged)
if [ "$DRY" = 1 ] || [ ${#EXTRA[@]} -gt 0 ]; then
  shim="$BUILD_ROOT/.cmake-shim"; mkdir -p "$shim"
  cat > "$shim/cmake" <<EOF
#!/usr/bin/env bash
if [ "\${1:-}" = --build ]; then
  echo "+ cmake \$*"
  if [ "$DRY" = 1 ]; then echo "DRY: not building"; exit 0; fi
  exec "$REAL_CMAKE" "\$@"
fi
extra=(${EXTRA_CMAKE_ARGS:-})
echo "+ cmake \$* \${extra[*]}"
exec "$REAL_CMAKE" "\$@" "\${extra[@]}"
EOF
  chmod +x "$shim/cmake"; export PATH="$shim:$PATH"
fi

unpack() {  # unpack TARBALL DIRNAME
  rm -rf "${SRC_ROOT:?}/$2"
  xz -dc "$CARRY/$1" | tar -C "$SRC_ROOT" -xf -
}

build_ik() {
  local src=$SRC_ROOT/ik_llama.cpp build=$BUILD_ROOT/ik_llama.cpp times=$BUILD_ROOT/ik_llama.cpp.times t
  unpack ik-src.tar.xz ik_llama.cpp || return
  t=$(date +%s)
  cmake -S "$src" -B "$build" "${IK_ARGS[@]}" "${IK_EXTRA[@]}" || return
  echo "configure_s=$(( $(date +%s) - t ))" > "$times"
  # shellcheck disable=SC2086 # the targets are words
  cmake --build "$build" --target $TARGETS -j "$IK_JOBS" || return
  echo "build_s=$(( $(date +%s) - t ))" >> "$times"
}

build_ik_nice() {  # run in ik's own background subshell: what it starts inherits the lower priority
  [ "${IK_NICE:-0}" = 0 ] || renice -n "$IK_NICE" -p "$BASHPID" > /dev/null
  build_ik
}

build_main_nice() {  # the same for mainline (MAIN_NICE), when ik is the one awaited first
  [ "${MAIN_NICE:-0}" = 0 ] || renice -n "$MAIN_NICE" -p "$BASHPID" > /dev/null
  build_main
}

build_main() {
  unpack llama-src.tar.xz llama.cpp || return
  bash "$REPO/bench/seed_limits/build_llama.sh" "$SRC_ROOT/llama.cpp" "$BUILD_ROOT/llama.cpp" \
       "$MAIN_JOBS" "$BUILD_ROOT/llama.cpp.times" "$TARGETS"
}

run_fork() {  # run_fork FORK FUNCTION: FORK.log while it runs, FORK.done when it ends
  local fork=$1 fn=$2 t0 rc
  rm -f "$BUILD_ROOT/$fork.done" "$BUILD_ROOT/$fork.times"
  t0=$(date +%s)
  echo "== $fork: $(date -u +%FT%TZ) jobs $([ "$fork" = ik_llama.cpp ] && echo "$IK_JOBS" || echo "$MAIN_JOBS") DRY=$DRY"
  "$fn" > "$BUILD_ROOT/$fork.log" 2>&1; rc=$?
  if [ "$DRY" != 1 ] && [ "$rc" = 0 ]; then
    for b in llama-server llama-bench; do
      [ -x "$BUILD_ROOT/$fork/bin/$b" ] || { echo "no $BUILD_ROOT/$fork/bin/$b" >> "$BUILD_ROOT/$fork.log"; rc=1; }
    done
  fi
  { echo "rc=$rc"; echo "seconds=$(( $(date +%s) - t0 ))"; cat "$BUILD_ROOT/$fork.times" 2>/dev/null; } \
    > "$BUILD_ROOT/$fork.done.tmp"
  mv "$BUILD_ROOT/$fork.done.tmp" "$BUILD_ROOT/$fork.done"
  echo "== $fork: rc=$rc after $(( $(date +%s) - t0 )) s (log $BUILD_ROOT/$fork.log)"
  return "$rc"
}

rm -f "$BUILD_ROOT/all.done"
echo "build_both: sources $SRC_ROOT, builds $BUILD_ROOT, ik -j$IK_JOBS, llama.cpp -j$MAIN_JOBS"
# IK_NICE (default 0): ik's build at a lower priority, so that mainline ends first and its measurements can
# start while ik still builds (IK_NICE=19 MAIN_JOBS=JOBS: mainline in about 5 minutes, ik after it);
# MAIN_NICE the other way round (ik in about 10.5 minutes, mainline in the cycles ik leaves idle)
if [ "${SKIP_IK:-0}" = 1 ]; then   # ik_llama.cpp's llama-server came in the carry (session.sh unpacked it)
  { echo "rc=0"; echo "seconds=0"; echo "carried=1"; } > "$BUILD_ROOT/ik_llama.cpp.done"; true & ik_pid=$!
else
  run_fork ik_llama.cpp build_ik_nice & ik_pid=$!
fi
if [ "${SKIP_MAIN:-0}" = 1 ]; then   # llama.cpp's llama-server came in the carry (session.sh unpacked it)
  { echo "rc=0"; echo "seconds=0"; echo "carried=1"; } > "$BUILD_ROOT/llama.cpp.done"; true & main_pid=$!
else
  run_fork llama.cpp build_main_nice & main_pid=$!
fi
wait "$ik_pid"; ik_rc=$?
wait "$main_pid"; main_rc=$?
printf 'ik_llama.cpp=%s\nllama.cpp=%s\n' "$ik_rc" "$main_rc" > "$BUILD_ROOT/all.done"
[ "$DRY" = 1 ] && grep -h "^+ cmake" "$BUILD_ROOT/ik_llama.cpp.log" "$BUILD_ROOT/llama.cpp.log"
exit $(( ik_rc || main_rc ))
