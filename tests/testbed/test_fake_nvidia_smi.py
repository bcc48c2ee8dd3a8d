import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SMI = Path(__file__).resolve().parents[2] / "testbed" / "fake_nvidia_smi.py"

GPUS = [
    {"name": "NVIDIA GeForce RTX 3090", "memory_mib": 24576, "compute_cap": "8.6",
     "pci_bus_id": "00000000:01:00.0", "uuid": "GPU-11111111-1111-1111-1111-111111111111",
     "power_default_w": 350, "power_min_w": 100, "power_max_w": 350},
    {"name": "NVIDIA GeForce RTX 4090", "memory_mib": 24564, "compute_cap": "8.9",
     "pci_bus_id": "00000000:02:00.0", "uuid": "GPU-22222222-2222-2222-2222-222222222222",
     "power_default_w": 450, "power_min_w": 150, "power_max_w": 600},
]


@pytest.fixture
def smi(tmp_path):
    gpus = tmp_path / "gpus.json"
    gpus.write_text(json.dumps(GPUS))
    env = {"FAKE_NVIDIA_GPUS": str(gpus), "FAKE_NVIDIA_STATE": str(tmp_path / "run" / "state.json"),
           "PATH": "/usr/bin:/bin"}

    def call(*args):
        return subprocess.run([sys.executable, str(SMI), *args], capture_output=True, text=True, env=env)
    call.state = tmp_path / "run" / "state.json"
    return call


def test_plain_and_list(smi):
    r = smi()
    assert r.returncode == 0 and "NVIDIA-SMI" in r.stdout and "RTX 4090" in r.stdout
    r = smi("-L")
    assert r.stdout.splitlines() == [
        "GPU 0: NVIDIA GeForce RTX 3090 (UUID: GPU-11111111-1111-1111-1111-111111111111)",
        "GPU 1: NVIDIA GeForce RTX 4090 (UUID: GPU-22222222-2222-2222-2222-222222222222)"]
    assert smi("-L", "-i", "1").stdout.startswith("GPU 1: NVIDIA GeForce RTX 4090")


def test_query_units_header(smi):
    r = smi("--query-gpu=index,name,uuid,pci.bus_id,memory.total,memory.used,memory.free,compute_cap,"
            "power.limit,enforced.power.limit,power.default_limit,power.min_limit,power.max_limit,"
            "persistence_mode,driver_version", "--format=csv")
    assert r.returncode == 0, r.stdout
    lines = r.stdout.splitlines()
    assert lines[0] == ("index, name, uuid, pci.bus_id, memory.total [MiB], memory.used [MiB], "
                        "memory.free [MiB], compute_cap, power.limit [W], enforced.power.limit [W], "
                        "power.default_limit [W], power.min_limit [W], power.max_limit [W], "
                        "persistence_mode, driver_version")
    row = lines[1].split(", ")
    assert row[:5] == ["0", "NVIDIA GeForce RTX 3090", GPUS[0]["uuid"], "00000000:01:00.0", "24576 MiB"]
    assert row[7:13] == ["8.6", "350.00 W", "350.00 W", "350.00 W", "100.00 W", "350.00 W"]
    assert row[13] == "Disabled"
    assert len(lines) == 3


def test_query_nounits_noheader_and_id(smi):
    r = smi("--query-gpu=memory.total,power.limit,power.max_limit", "--format=csv,noheader,nounits")
    assert r.stdout == "24576, 350.00, 350.00\n24564, 450.00, 600.00\n"
    r = smi("-i", "1", "--query-gpu=name", "--format=csv,noheader")
    assert r.stdout == "NVIDIA GeForce RTX 4090\n"
    r = smi("--id=0,1", "--query-gpu=index", "--format=csv,noheader")
    assert r.stdout == "0\n1\n"
    r = smi("-i", GPUS[1]["uuid"], "--query-gpu=index", "--format=csv,noheader")
    assert r.stdout == "1\n"


def test_power_limit_set_and_range(smi):
    r = smi("-i", "0", "-pl", "300")
    assert r.returncode == 0
    assert r.stdout == ("Power limit for GPU 00000000:01:00.0 was set to 300.00 W from 350.00 W.\n"
                        "All done.\n")
    r = smi("-i", "0", "--query-gpu=power.limit,enforced.power.limit,power.default_limit",
            "--format=csv,noheader,nounits")
    assert r.stdout == "300.00, 300.00, 350.00\n"
    r = smi("-i", "0", "-pl", "50")
    assert r.returncode == 2
    assert r.stdout.splitlines()[0] == ("Provided power limit 50.00 W is not a valid power limit which should "
                                        "be between 100.00 W and 350.00 W for GPU 00000000:01:00.0")
    # unchanged after the failure
    assert smi("-i", "0", "--query-gpu=power.limit", "--format=csv,noheader").stdout == "300.00 W\n"
    # all GPUs at once, each its own range
    r = smi("-pl", "120")  # fine for GPU 0 (100-350), not for GPU 1 (150-600)
    assert r.returncode == 2
    assert r.stdout.splitlines() == [
        "Power limit for GPU 00000000:01:00.0 was set to 120.00 W from 300.00 W.",
        "Provided power limit 120.00 W is not a valid power limit which should be between "
        "150.00 W and 600.00 W for GPU 00000000:02:00.0",
        "Terminating early due to previous errors."]
    r = smi("-pl", "250")
    assert r.returncode == 0 and r.stdout.count("was set to 250.00 W") == 2


def test_persistence_mode(smi):
    r = smi("-pm", "1")
    assert r.returncode == 0
    assert r.stdout == ("Enabled persistence mode for GPU 00000000:01:00.0.\n"
                        "Enabled persistence mode for GPU 00000000:02:00.0.\nAll done.\n")
    assert smi("--query-gpu=persistence_mode", "--format=csv,noheader").stdout == "Enabled\nEnabled\n"
    r = smi("-i", "1", "-pm", "0")
    assert r.stdout == "Disabled persistence mode for GPU 00000000:02:00.0.\nAll done.\n"
    assert smi("--query-gpu=persistence_mode", "--format=csv,noheader").stdout == "Enabled\nDisabled\n"


def test_state_lost_when_run_dir_cleared(smi):
    smi("-pl", "300")
    smi.state.unlink()  # what a reboot does to /run
    assert smi("-i", "0", "--query-gpu=power.limit", "--format=csv,noheader,nounits").stdout == "350.00\n"


def test_errors(smi):
    r = smi("--bogus")
    assert r.returncode == 2 and "nvidia-smi -h" in r.stdout
    r = smi("--query-gpu=nonsense", "--format=csv")
    assert r.returncode == 2 and 'Field "nonsense" is not a valid field to query.' in r.stdout
    assert smi("--query-gpu=name").returncode == 2           # --format is required
    assert smi("-i", "7", "-L").returncode == 6               # no such GPU
    assert smi("-pl", "abc").returncode == 2


def test_non_root(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("fake_smi", SMI)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "g.json").write_text(json.dumps(GPUS))
    monkeypatch.setattr(mod, "GPUS_FILE", str(tmp_path / "g.json"))
    monkeypatch.setattr(mod, "STATE_FILE", str(tmp_path / "s.json"))
    monkeypatch.setattr(mod, "is_root", lambda: False)
    assert mod.main(["-i", "0", "-pl", "300"]) == 4
    assert "Insufficient Permissions" in capsys.readouterr().out
