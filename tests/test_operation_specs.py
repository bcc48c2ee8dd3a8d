"""JSON-spec tests of llamarig's own operations and facts (pyinfra-testing): arguments and facts in, exact commands out."""

from pathlib import Path
from unittest.mock import patch

from pyinfra_testing import util as testing_util
from pyinfra_testing.facts import make_fact_tests
from pyinfra_testing.operations import make_operation_tests

HERE = Path(__file__).parent

_fake_get_fact = testing_util.FakeHost.get_fact


def _get_fact_value(self, fact_cls, *args, **kwargs):
    """pyinfra-testing hands an operation a fact without arguments (gpu_facts.GpuState) as its FakeFact
    wrapper, which is always truthy, so a spec could not say "nvidia-smi is missing" (None) or "reports no
    GPU" ([]). Hand over the value instead, as pyinfra does (dicts still readable as attributes)."""
    fact = _fake_get_fact(self, fact_cls, *args, **kwargs)
    if isinstance(fact, testing_util.FakeFact):
        return testing_util._wrap_fact_value(fact.data)
    return fact


def _specs(test_class):
    return patch.object(testing_util.FakeHost, "get_fact", _get_fact_value)(test_class)


for _dir in sorted(d for d in (HERE / "operations").iterdir() if d.is_dir()):
    locals()[f"TestOp_{_dir.name.replace('.', '_')}"] = _specs(make_operation_tests("tasks", _dir.name, _dir))

# Operations that only act while pyinfra executes (they read the rig's live state then): the
# same specs, run as in the execute stage.
for _dir in sorted(d for d in (HERE / "operations_executing").iterdir() if d.is_dir()):
    _module = _dir.name.split(".")[0]
    locals()[f"TestExecutingOp_{_dir.name.replace('.', '_')}"] = patch(f"tasks.{_module}.executing", lambda: True)(
        _specs(make_operation_tests("tasks", _dir.name, _dir)))

for _dir in sorted(d for d in (HERE / "facts").iterdir() if d.is_dir()):
    locals()[f"TestFact_{_dir.name.replace('.', '_')}"] = make_fact_tests("tasks", _dir.name, _dir)
