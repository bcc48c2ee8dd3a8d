"""JSON-spec tests of llamarig's own operations and facts (pyinfra-testing): arguments and facts in, exact commands out."""

from pathlib import Path
from unittest.mock import patch

from pyinfra_testing.facts import make_fact_tests
from pyinfra_testing.operations import make_operation_tests

HERE = Path(__file__).parent

for _dir in sorted(d for d in (HERE / "operations").iterdir() if d.is_dir()):
    locals()[f"TestOp_{_dir.name.replace('.', '_')}"] = make_operation_tests("tasks", _dir.name, _dir)

# Operations that only act while pyinfra executes (they read the rig's live state then): the
# same specs, run as in the execute stage.
for _dir in sorted(d for d in (HERE / "operations_executing").iterdir() if d.is_dir()):
    _module = _dir.name.split(".")[0]
    locals()[f"TestExecutingOp_{_dir.name.replace('.', '_')}"] = patch(f"tasks.{_module}.executing", lambda: True)(
        make_operation_tests("tasks", _dir.name, _dir))

for _dir in sorted(d for d in (HERE / "facts").iterdir() if d.is_dir()):
    locals()[f"TestFact_{_dir.name.replace('.', '_')}"] = make_fact_tests("tasks", _dir.name, _dir)
