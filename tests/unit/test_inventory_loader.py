"""llamarig's offline loader must give each host exactly the data pyinfra gives it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llamarig.hostdata.inventory import InventoryError, load_inventory

ROOT = Path(__file__).resolve().parents[2]


def pyinfra_view(inventory: Path, cwd: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "pyinfra", str(inventory), "debug-inventory", "--json"],
                         cwd=cwd, capture_output=True, text=True, check=True)
    return {host["name"]: host for host in json.loads(out.stdout)}


def write_layout(tmp: Path) -> Path:
    (tmp / "inv" / "group_data").mkdir(parents=True)
    (tmp / "inv" / "rigs.py").write_text(
        "garage = [('g1', {'ssh_hostname': '127.0.0.1', 'power_limit_w': 300}), 'g2']\n"
        "office = (['o1'], {'build_ref': 'office-ref'})\n"
    )
    (tmp / "inv" / "group_data" / "garage.py").write_text(
        "from os import path\nbuild_ref = 'garage-ref'\nservices = [{'name': 's', 'model': 'm', 'port': 1}]\n")
    (tmp / "inv" / "group_data" / "rigs.py").write_text("verify_max_tokens = 7\nbuild_ref = 'file-group-ref'\n")
    (tmp / "inv" / "group_data" / "all.py").write_text("hub_endpoint = 'http://127.0.0.1:1'\n")
    return tmp / "inv" / "rigs.py"


def test_loader_matches_pyinfra(tmp_path):
    inventory = write_layout(tmp_path)
    ours = {h.name: h.data for h in load_inventory(inventory, cwd=ROOT)}
    theirs = pyinfra_view(inventory, ROOT)
    assert set(ours) == set(theirs) == {"g1", "g2", "o1"}
    for host in load_inventory(inventory, cwd=ROOT):
        assert host.groups == theirs[host.name]["groups"]
        assert json.loads(json.dumps(host.data)) == theirs[host.name]["data"], host.name
    assert ours["g1"]["power_limit_w"] == 300
    assert ours["o1"]["verify_max_tokens"] == 7
    assert ours["o1"]["build_ref"] == "file-group-ref" and ours["g2"]["build_ref"] == "file-group-ref"
    assert ours["g2"]["hub_endpoint"] == "http://127.0.0.1:1"  # inventory-dir all.py over cwd all.py
    assert "path" not in ours["g1"]  # an imported name is not data


def test_broken_inventory_is_an_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("rigs = [\n")
    with pytest.raises(InventoryError, match="bad.py: could not be loaded: SyntaxError"):
        load_inventory(bad)
