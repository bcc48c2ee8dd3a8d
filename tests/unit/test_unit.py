from llamarig.layout import pick_model_file, split_siblings
from llamarig.release.unit import render_unit, systemd_quote
from llamarig.hostdata.validate import validate_host

from .helpers import rig


def doc_with(**service):
    doc, problems = validate_host("garage", rig(services=[{"name": "chat", "model": "gemma", "port": 8000, **service}]))
    assert problems == []
    return doc


def exec_start(text):
    return next(line for line in text.splitlines() if line.startswith("ExecStart="))


def test_systemd_quoting():
    assert systemd_quote("--ctx-size") == "--ctx-size"
    assert systemd_quote("blk\\.(3|4)\\.ffn=CUDA0") == '"blk\\\\.(3|4)\\\\.ffn=CUDA0"'
    assert systemd_quote("100%") == "100%%"
    assert systemd_quote("$HOME") == '"$$HOME"'
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote('say "hi"') == '"say \\"hi\\""'
    assert systemd_quote("X=$1", dollar=False) == '"X=$1"'


def test_offline_a_unit_runs_the_stable_binary_and_the_declared_revision():
    doc = doc_with(ctx_size=4096, tensor_split=[1, 1])
    text = render_unit("garage", doc, doc["services"][0], "gemma-00001-of-00003.gguf")
    assert exec_start(text) == ("ExecStart=/opt/llamarig/llama.cpp/bin/llama-server --model "
                                "/var/lib/llamarig/models/gemma/main/gemma-00001-of-00003.gguf --port 8000 "
                                "--ctx-size 4096 --tensor-split 1,1")


def test_a_deployed_unit_names_its_build_prefix_and_model_commit():
    """What a rollback restores is the unit file alone, so it must name exactly what it runs."""
    doc = doc_with(ctx_size=4096)
    commit = "0123456789abcdef0123456789abcdef01234567"
    prefix = "/opt/llamarig/builds/llama.cpp-abcdefabcdef-0011223344"
    text = render_unit("garage", doc, doc["services"][0], "Q4/g-00001-of-00002.gguf", commit, prefix)
    assert exec_start(text) == (f"ExecStart={prefix}/bin/llama-server --model "
                                "/var/lib/llamarig/models/gemma/0123456789ab/Q4/g-00001-of-00002.gguf --port 8000 "
                                "--ctx-size 4096")
    assert f"@ main, commit {commit})" in text.splitlines()[1]
    other = render_unit("garage", doc, doc["services"][0], "Q4/g-00001-of-00002.gguf", "f" * 40, prefix)
    assert other != text  # a new revision is a new unit: the restart follows from the unit alone


def test_unit_environment_and_hardening():
    doc = doc_with(gpus=[1], environment={"GGML_X": "a b"})
    text = render_unit("garage", doc, doc["services"][0], "m.gguf")
    lines = text.splitlines()
    assert "Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID" in lines
    assert "Environment=CUDA_VISIBLE_DEVICES=1" in lines
    assert 'Environment="GGML_X=a b"' in lines
    for setting in ("User=llama", "NoNewPrivileges=yes", "ProtectSystem=strict", "KillSignal=SIGINT",
                    "ReadOnlyPaths=/var/lib/llamarig/models", "StartLimitBurst=3"):
        assert setting in lines


def test_cpu_rig_unit_has_no_cuda_environment():
    doc, problems = validate_host("cpu", rig(gpus=[], services=[{"name": "c", "model": "gemma", "port": 1}]))
    assert problems == []
    assert "CUDA_VISIBLE_DEVICES" not in render_unit("cpu", doc, doc["services"][0], "m.gguf")


def test_split_sets():
    assert split_siblings("Q/x-00001-of-00003.gguf") == ["Q/x-00001-of-00003.gguf", "Q/x-00002-of-00003.gguf",
                                                         "Q/x-00003-of-00003.gguf"]
    assert split_siblings("x.gguf") == ["x.gguf"]
    assert pick_model_file(["Q/x-00002-of-00002.gguf", "Q/x-00001-of-00002.gguf", "README.md"]) == "Q/x-00001-of-00002.gguf"
    assert pick_model_file(["a.gguf", "mmproj-F16.gguf"]) == "a.gguf"
    assert pick_model_file(["a.gguf", "b.gguf"]) is None
    assert pick_model_file(["README.md"]) is None


def test_power_boot_unit_sets_every_declared_setting():
    from llamarig.release.power import boot_commands
    from llamarig.release.unit import render_power_unit

    commands = boot_commands({0: 300.0, 2: 250.5}, persistence=True, n_gpus=3)
    assert commands == ["nvidia-smi -i 0 -pm 1", "nvidia-smi -i 0 -pl 300", "nvidia-smi -i 1 -pm 1",
                        "nvidia-smi -i 2 -pm 1", "nvidia-smi -i 2 -pl 250.5"]
    text = render_power_unit("garage", commands)
    assert "Type=oneshot" in text and "RemainAfterExit=yes" in text and "WantedBy=multi-user.target" in text
    # modules and device nodes first (the hardened servers cannot create them), then every setting
    assert [line for line in text.splitlines() if line.startswith("ExecStart=")] == \
        ["ExecStart=-/usr/bin/nvidia-modprobe -u -c0"] + [f"ExecStart={c}" for c in commands]


def test_gpu_services_start_after_the_power_unit():
    doc = doc_with()
    lines = render_unit("garage", doc, doc["services"][0], "m.gguf").splitlines()
    assert "After=network-online.target llamarig-power.service" in lines
    assert "Wants=network-online.target llamarig-power.service" in lines
