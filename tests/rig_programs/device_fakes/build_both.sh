#!/usr/bin/env bash
# A stand-in build_both.sh: llama.cpp at once, ik_llama.cpp two seconds later, both as the stand-in
# llama-server (tests/rig_programs/fake_llama_server.py); ik's dies on its first prompt unless it gets
# FAKE_IK_NEEDS (as ik_llama.cpp did on the H200 at its defaults).
B=$2
here=$(cd "$(dirname "$0")" && pwd)
server="$here/../fake_llama_server.py"
mkdir -p "$B/llama.cpp/bin" "$B/ik_llama.cpp/bin"
echo "SKIP_MAIN=${SKIP_MAIN:-0} SKIP_IK=${SKIP_IK:-0}" > "$B/skips"   # a fork carried in is not built
echo "IK_NICE=${IK_NICE:-0} MAIN_NICE=${MAIN_NICE:-0}" > "$B/nice"
[ "${SKIP_MAIN:-0}" = 1 ] ||
  printf '#!/bin/sh\nexec %s %s "$@"\n' "$(command -v python3)" "$server" > "$B/llama.cpp/bin/llama-server"
[ "${SKIP_IK:-0}" = 1 ] ||
  printf '#!/bin/sh\nFAKE_CRASH_UNLESS=%s FAKE_CRASH_MODE=exit FAKE_HOLD_FILE=%s0 exec %s %s "$@"\n' \
    "$FAKE_IK_NEEDS" "$GPU_FILES" "$(command -v python3)" "$server" > "$B/ik_llama.cpp/bin/llama-server"
chmod +x "$B"/*/bin/llama-server
printf 'rc=0\nseconds=1\n' > "$B/llama.cpp.done"
sleep 2
printf 'rc=0\nseconds=3\n' > "$B/ik_llama.cpp.done"
printf 'all done\n' > "$B/all.done"
