#!/usr/bin/env bash
# Install what is needed, then run the whole test suite: unit tests, operation specs,
# the test harness's own tests and the end-to-end deploys on container rigs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest -p no:cacheprovider -ra "$@" tests
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "test: no test ran; that is a failure" >&2
    exit 1
fi
exit "$rc"
