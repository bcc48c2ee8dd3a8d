#!/usr/bin/env bash
# The one command of the GPU machine, called again and again (carry: bench/tune_device/.carry) until it
# prints "session: done":
#
#   bash bench/tune_device/run_device.sh
#
# The first call starts session.sh detached (builds, models, ballast, the fidelity cases of both forks, the
# tune); every call follows it for at most CALL_S seconds and then takes home what there is so far, in
# $OUT/partial.tar.gz (the session's log, the fidelity cases' JSON and server logs, the tune's partial
# results and candidates' logs, the build times), and, once each, a fork's llama-server xz-compressed in
# parts of 16 MB ($OUT/FORK.xz.partN, FORK.sha256) for a later session's carry (session.sh then
# unpacks it instead of building). Work lives in WORK
# (/tmp/tunedev), which outlives a call while the machine stays warm.
set -uo pipefail
T0=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/bench/tune_device"
WORK=${WORK:-/tmp/tunedev}
OUT=${OUT:-$HERE/out}
CALL_S=${CALL_S:-560}
B="$WORK/build"
mkdir -p "$WORK" "$OUT"
say() { echo "[call t+$(( $(date +%s) - T0 ))s] $*"; }

if [ ! -f "$WORK/started" ]; then
  touch "$WORK/started"
  setsid nohup bash "$HERE/session.sh" > "$WORK/session.log" 2>&1 < /dev/null &
  say "session started"
fi

home() {
  cat "$B"/*.done > "$WORK/build-times.txt" 2>/dev/null
  (cd "$WORK" && tar -czf "$OUT/partial.tar.gz" --ignore-failed-read session.log build-times.txt env-before.txt \
      fidelity fidelity.log smoke ik_args.txt tune.log tune/partial.json tune/tune.json tune/tune.txt tune/logs model.log \
      ballast.out build_both.out 2>/dev/null)
  # each fork's llama-server once, in the first call after it is built (llama.cpp's first), in parts of 16 MB:
  # at most 4 parts (8 files a call, 64 MiB together, beside partial.tar.gz)
  for fork in llama.cpp ik_llama.cpp; do
    [ -f "$B/$fork.done" ] && grep -qx rc=0 "$B/$fork.done" && [ ! -f "$WORK/$fork.sent" ] || continue
    [ -n "$(ls "$OUT"/*.part* 2>/dev/null)" ] && continue   # one fork's parts a call
    touch "$WORK/$fork.sent"
    # stripped (its symbols are no help without a debugger, and ik's binary must fit 4 parts and the carry)
    strip -o "$WORK/$fork.stripped" "$B/$fork/bin/llama-server" 2>/dev/null || cp "$B/$fork/bin/llama-server" "$WORK/$fork.stripped"
    xz -T0 -6 -c "$WORK/$fork.stripped" > "$WORK/$fork.xz"
    size=$(stat -c %s "$WORK/$fork.xz")
    [ "$size" -le 62000000 ] || { say "$fork's llama-server is too large to come home: $size bytes xz"; continue; }
    split -b 16000000 -d -a 1 "$WORK/$fork.xz" "$OUT/$fork.xz.part"
    (cd "$WORK" && sha256sum "$fork.xz") > "$OUT/$fork.sha256"
    say "$fork's llama-server comes home: $size bytes"
  done
}

last=
# UNTIL=FORK: the call also ends as soon as FORK's build has ended (its llama-server then comes home at once)
while [ ! -f "$WORK/session.done" ] && [ $(( T0 + CALL_S - $(date +%s) )) -gt 60 ] &&
      { [ -z "${UNTIL:-}" ] || [ ! -f "$B/$UNTIL.done" ]; }; do
  now=$(grep -v '^\[' "$WORK/fidelity.log" 2>/dev/null | tail -0; tail -n 2 "$WORK/session.log" | tr '\n' ' ')
  if [ "$now" != "$last" ]; then say "$now"; last=$now; fi
  sleep 10
done
bash "$HERE/build_both.sh" --status "$B" 2>/dev/null | head -4
grep -h "fidelity .*: \(serves\|exited\|timeout\|request-failed\)" "$WORK/fidelity.log" 2>/dev/null | tail -30
grep '^tune: round\|^tune: .* measured\|not measured' "$WORK/tune.log" 2>/dev/null | tail -12
home
if [ -f "$WORK/session.done" ]; then
  tail -n 20 "$WORK/session.log"; cat "$WORK/tune/tune.txt" 2>/dev/null; say "session: done"
else
  say "session running: $(tail -n 1 "$WORK/session.log")"
fi
