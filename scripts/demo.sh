#!/usr/bin/env bash
# Install what is needed, bring up the embedded demo rig (a systemd container on this
# machine, with a local Hub and git server), deploy llamarig to it, print the model's answer.
# Run it again: the rig is kept and the deploy changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LLAMARIG_DEMO_DIR=${LLAMARIG_DEMO_DIR:-/var/lib/llamarig-demo}

if ! .venv/bin/python - <<'PY'
import json, os, sys
p = os.path.join(os.environ["LLAMARIG_DEMO_DIR"], "testbed.json")
try:
    s = json.load(open(p))
except (OSError, ValueError):
    sys.exit(1)
sys.exit(0 if s.get("ready") and os.path.exists(f"/proc/{s['server_pid']}") else 1)
PY
then
    echo "demo: starting the demo rig (first time: builds a Debian root filesystem, a few minutes)" >&2
    .venv/bin/python -m testbed up --workdir "$LLAMARIG_DEMO_DIR" --rigs demo:2222:2x3090 >/dev/null
fi

echo "demo: deploying (first time: builds llama.cpp on the rig, about 10 minutes on 2 cores)" >&2
.venv/bin/llamarig check inventory/demo.py
.venv/bin/pyinfra -y inventory/demo.py deploy.py

echo
echo "demo: asking the rig's llama-server (127.0.0.1:8080), a base model, to complete a line:"
prompt='Question: What is the capital of France?\nAnswer:'
echo "  $prompt" | sed 's/\\n/\n  /'
curl -sS http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"$prompt\", \"max_tokens\": 16, \"temperature\": 0, \"stop\": [\"\\n\"]}" \
  | .venv/bin/python -c 'import json,sys; print("  the model answers:", json.load(sys.stdin)["choices"][0]["text"].strip())'
echo
echo "demo: stop the rig with: .venv/bin/python -m testbed down --workdir $LLAMARIG_DEMO_DIR"
