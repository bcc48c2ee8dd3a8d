#!/bin/sh
# Build one llama.cpp / ik_llama.cpp commit into its own prefix (installed by llamarig).
# Usage: llamarig-build.sh SRC URL COMMIT WORKTREE BUILDDIR PREFIX JOBS "TARGETS" RECORD_NAME RECORD_JSON -- CMAKE_ARGS...
# The prefix appears only when the build is complete (built in PREFIX.tmp, then renamed),
# so a failed build leaves every earlier build, and the link units use, as it was.
# RECORD_NAME is the build record's file name inside the prefix (its presence marks a complete
# prefix) and RECORD_JSON its whole text, made by the controller and written verbatim.
set -eu
if [ "$#" -lt 10 ]; then
    echo "usage: llamarig-build.sh SRC URL COMMIT WORKTREE BUILDDIR PREFIX JOBS TARGETS RECORD_NAME RECORD_JSON -- CMAKE_ARGS..." >&2
    exit 2
fi
src=$1 url=$2 commit=$3 work=$4 builddir=$5 prefix=$6 jobs=$7 targets=$8 record_name=$9 record=${10}
shift 10
[ "${1:-}" = "--" ] && shift
case "$record_name" in
    ""|.|..|*/*) echo "llamarig-build: RECORD_NAME must be a file name: $record_name" >&2; exit 2 ;;
esac

log() { echo "llamarig-build: $*" >&2; }

elapsed() { local s=$(( $(date +%s) - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# One line every LLAMARIG_PROGRESS_S seconds (10) while the build runs, and one when it ends: how far
# the build tool says it is (steps done of the total, from make's CMakeFiles/Progress or ninja's
# [done/total]; else make's [ NN%] and the objects compiled so far), and for how long. The deploy shows them as they come, with the rig's name.
watch_build() {
    local pid=$1 buildlog=$2 every=${LLAMARIG_PROGRESS_S:-10} started n=0 rc=0
    started=$(date +%s)
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        n=$((n + 1))
        [ $((n % every)) -eq 0 ] && echo "llamarig-build: $targets: $(build_progress "$buildlog"), $(elapsed "$started")"
    done
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] && echo "llamarig-build: $targets: $(build_progress "$buildlog"), built in $(elapsed "$started")"
    return "$rc"
}

build_progress() {
    # make (CMake's default generator) keeps CMakeFiles/Progress while it runs: a file per step done and
    # count.txt, the steps of the requested targets; ninja prints [done/total]
    local progress="${1%.build.log}/CMakeFiles/Progress" marker objects total done_steps
    if [ -f "$progress/count.txt" ]; then
        total=$(cat "$progress/count.txt" 2>/dev/null || echo 0)
        done_steps=$(find "$progress" -maxdepth 1 -type f ! -name count.txt 2>/dev/null | wc -l)
        if [ "${total:-0}" -gt 0 ] 2>/dev/null; then
            echo "step $done_steps of $total ($(( done_steps * 100 / total ))%)"
            return
        fi
    fi
    marker=$(tail -c 20000 "$1" 2>/dev/null | grep -oE '^\[ *[0-9]+%\]|^\[[0-9]+/[0-9]+\]' | tail -n 1 | tr -d '[] ')
    objects=$(grep -c -E 'Building (C|CXX|CUDA) object|Building (C|CXX|CUDA) ' "$1" 2>/dev/null || true)
    case "$marker" in
        */*) echo "step ${marker%/*} of ${marker#*/} ($(( ${marker%/*} * 100 / ${marker#*/} ))%)" ;;
        *%) echo "${marker} done, ${objects:-0} objects compiled" ;;
        *) echo "starting" ;;
    esac
}

build() {
    if [ -f "$prefix/$record_name" ]; then
        log "$prefix is already complete"
        return 0
    fi
    if [ ! -d "$src/.git" ]; then
        rm -rf "$src"
        git clone --quiet --no-checkout "$url" "$src"
    fi
    git -C "$src" remote set-url origin "$url"
    if ! git -C "$src" cat-file -e "$commit^{commit}" 2>/dev/null; then
        git -C "$src" fetch --quiet --tags origin || true
        git -C "$src" cat-file -e "$commit^{commit}" 2>/dev/null || git -C "$src" fetch --quiet origin "$commit"
    fi
    if [ ! -e "$work/.git" ]; then
        rm -rf "$work"
        git -C "$src" worktree prune
        git -C "$src" worktree add --quiet --force --detach "$work" "$commit"
    fi
    [ "$(git -C "$work" rev-parse HEAD)" = "$commit" ] || git -C "$work" checkout --quiet --detach "$commit"
    [ -n "$jobs" ] && [ "$jobs" != "0" ] || jobs=$(nproc)
    log "configuring $commit in $builddir"
    cmake -S "$work" -B "$builddir" "$@" > "$builddir.configure.log" 2>&1 || { tail -n 40 "$builddir.configure.log" >&2; exit 1; }
    # A target NAME|OTHER is whichever of the two this tree has (llama.cpp renamed rpc-server to
    # ggml-rpc-server in 2026), installed as NAME.
    known=""
    case "$targets" in *"|"*) known=$(cmake --build "$builddir" --target help 2>/dev/null || true) ;; esac
    built=""
    for t in $targets; do
        pick=${t%%|*}
        case "$t" in
            *"|"*) for alt in $(printf '%s' "$t" | tr '|' ' '); do
                       if printf '%s\n' "$known" | grep -Eq "(^|[ .:])$alt(:|$| )"; then pick=$alt; break; fi
                   done ;;
        esac
        built="$built $pick"
    done
    log "building$built with $jobs jobs"
    # shellcheck disable=SC2086
    cmake --build "$builddir" --config Release -j "$jobs" --target $built > "$builddir.build.log" 2>&1 &
    watch_build $! "$builddir.build.log" || { tail -n 60 "$builddir.build.log" >&2; exit 1; }
    rm -rf "$prefix.tmp"
    mkdir -p "$prefix.tmp/bin"
    set -- $built
    for t in $targets; do
        cp "$builddir/bin/$1" "$prefix.tmp/bin/${t%%|*}"
        shift
    done
    printf '%s\n' "$record" > "$prefix.tmp/$record_name"
    mv "$prefix.tmp" "$prefix"
    log "installed $prefix"
}

mkdir -p "$(dirname "$src")" "$(dirname "$work")" "$(dirname "$builddir")" "$(dirname "$prefix")" "$builddir"
if [ -n "${CCACHE_DIR:-}" ] && command -v flock >/dev/null 2>&1; then
    # Rigs that share one ccache build one key at a time: the second one finds every object cached.
    mkdir -p "$CCACHE_DIR"
    lock="$CCACHE_DIR/.llamarig-$(basename "$prefix").lock"
    exec 9>"$lock"
    flock 9
fi
build "$@"
