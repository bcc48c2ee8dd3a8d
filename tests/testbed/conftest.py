import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: boots nspawn containers (needs root, systemd-nspawn)")


@pytest.fixture(scope="session")
def rigs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rigs", numbered=True)
    yield d
    from testbed.rig import stop_all
    stop_all(d)


def need_root():
    if os.geteuid() != 0:
        pytest.fail("the container tests need root (run them as CI does: bash scripts/test.sh as root)")
