"""JSON-spec tests of llamarig's own operations and facts (pyinfra-testing): arguments and facts in, exact commands out."""

from pathlib import Path

from pyinfra_testing.facts import make_fact_tests
from pyinfra_testing.operations import make_operation_tests

HERE = Path(__file__).parent

for _dir in sorted(d for d in (HERE / "operations").iterdir() if d.is_dir()):
    locals()[f"TestOp_{_dir.name.replace('.', '_')}"] = make_operation_tests("tasks", _dir.name, _dir)

for _dir in sorted(d for d in (HERE / "facts").iterdir() if d.is_dir()):
    locals()[f"TestFact_{_dir.name.replace('.', '_')}"] = make_fact_tests("tasks", _dir.name, _dir)
