#!/usr/bin/env bash
# Install what is needed, then run the whole test suite: unit tests, operation specs,
# the test harness's own tests and the end-to-end deploys on container rigs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One temporary folder per run, removed here by rm on its own file system when the next run starts:
# pytest's own clean-up of old numbered folders walks the container rigs' root filesystems with
# shutil at the end of a session (it once ran out of open files there on a CI machine).
base=${LLAMARIG_TEST_TMP:-/tmp/llamarig-tests}
rm -rf --one-file-system "$base"
set +e
.venv/bin/python -m pytest -p no:cacheprovider -ra --basetemp "$base" "$@" tests
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "test: no test ran; that is a failure" >&2
    exit 1
fi
exit "$rc"
