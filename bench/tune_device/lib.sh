# Functions of session.sh (sourced), apart so that tests/unit/test_tune_device.py can run them here.
# They use session.sh's say, fid, WORK, IK, IK_VARIANTS, BALLAST_PID and BASE_USED; GPU_FILES (the GPU's
# device files, /dev/nvidia*) is a prefix of the paths a holder has open.

gpu_clean() {  # nothing but the ballast holds the GPU: every other holder of its device files is killed
  local pid used
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$BALLAST_PID" ] || [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] && continue
    if ls -l "$d/fd" 2>/dev/null | grep -qF " -> ${GPU_FILES:-/dev/nvidia}"; then
      say "gpu_clean: killing $pid ($(tr '\0' ' ' < "$d/cmdline" 2>/dev/null | cut -c1-160))"
      kill -9 "$pid" 2>/dev/null
    fi
  done
  sleep 2
  used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
  say "gpu_clean: memory.used $used MiB (the ballast alone: $BASE_USED)"
}


ik_serving_variant() {  # sets IK_FOUND (1 or empty) and IK_ARGS: the first of IK_VARIANTS (a line each) that serves
  local i variant outcome words
  IK_FOUND= IK_ARGS=
  i=0
  while IFS= read -r -u 3 variant; do
    i=$((i + 1)); gpu_clean
    words=(); for w in $variant; do words+=("--server-arg=$w"); done
    FID_OUT=$WORK/smoke fid ik_llama.cpp "$IK" "smoke$i" "$WORK/model.gguf" --n-vocab 7000 --ctx 32768 --ubatch 512 --parallel 1 \
      --prompt 1000 --start-timeout 120 --request-timeout 60 "${words[@]}"
    outcome=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["outcome"])' \
      "$WORK/smoke/ik_llama.cpp-smoke$i-c32k-ub512-np1-f16.json" 2>/dev/null)
    say "ik smoke $i [${variant:-its defaults}]: $outcome"
    if [ "$outcome" = serves ]; then IK_FOUND=1; IK_ARGS=$variant; break; fi
  done 3<<< "$IK_VARIANTS"
}
