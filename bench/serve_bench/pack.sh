#!/usr/bin/env bash
# Run HERE (the controller): prepares bench/serve_bench/.carry/ (git-ignored), which the device run
# needs, so it has to be named in the device tool's `carry` (bench/serve_bench/.carry). The same
# pruned llama.cpp tree and pure-Python packages as bench/seed_limits/pack.sh (which checks that
# tools/llama-bench survives the pruning, and configures the packed tree), in this bench's folder.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CARRY="$HERE/.carry" exec bash "$HERE/../seed_limits/pack.sh" "$@"
