from llamarig.layout import pick_model_file, split_siblings
from llamarig.release.unit import systemd_quote
from llamarig.hostdata.validate import validate_host

from .helpers import COMMIT, MODEL_COMMIT, release_of, rig, unit_text


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


def test_a_unit_names_its_build_prefix_and_model_commit():
    """What a rollback restores is the unit file alone, so it must name exactly what it runs."""
    from llamarig.release.assemble import RigFacts

    doc = doc_with(ctx_size=4096, tensor_split=[1, 1])
    doc["models"]["gemma"]["file"] = "Q4/g-00001-of-00002.gguf"
    release = release_of("garage", doc, RigFacts(True, ("86",)))
    prefix = release.build["prefix"]
    assert prefix.startswith(f"/opt/llamarig/builds/llama.cpp-{COMMIT[:12]}-")
    text = release.units["llamarig-chat.service"].text
    assert exec_start(text) == (f"ExecStart={prefix}/bin/llama-server --model "
                                f"/var/lib/llamarig/models/gemma/{MODEL_COMMIT[:12]}/Q4/g-00001-of-00002.gguf "
                                "--port 8000 --ctx-size 4096 --tensor-split 1,1")
    assert f"@ main, commit {MODEL_COMMIT})" in text.splitlines()[1]
    other = release_of("garage", doc, RigFacts(True, ("86",)), model_commit="f" * 40)
    assert other.units["llamarig-chat.service"].text != text  # a new revision is a new unit: it restarts
    cpu = release_of("garage", doc, RigFacts(False))
    assert cpu.build["prefix"] != prefix and cpu.build["prefix"] in cpu.units["llamarig-chat.service"].text


def test_the_release_argv_is_the_unit_exec_start_and_the_expectation_names_the_model():
    from llamarig.release.unit import systemd_split

    doc = doc_with(ctx_size=4096, parallel=2, alias="g", sampling={"temp": 0.6},
                   extra_args=["--alias", "other"], tensor_overrides=[["blk\\.1\\.", "CPU"]])
    u = release_of("garage", doc).units["llamarig-chat.service"]
    assert systemd_split(exec_start(u.text)[len("ExecStart="):]) == [u.binary, *u.argv]
    assert u.expect["props"] == {"n_ctx": 4096, "total_slots": 2, "sampling": {"temp": 0.6},
                                 "model_path": f"/var/lib/llamarig/models/gemma/{MODEL_COMMIT[:12]}/"
                                               "gemma-00001-of-00003.gguf"}  # alias: extra_args win
    assert u.expect["url"] == "http://127.0.0.1:8000" and u.expect["unit"] == "llamarig-chat.service"


def test_unit_environment_and_hardening():
    doc = doc_with(gpus=[1], environment={"GGML_X": "a b"})
    text = unit_text("garage", doc)
    lines = text.splitlines()
    assert "Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID" in lines
    assert "Environment=CUDA_VISIBLE_DEVICES=1" in lines
    assert 'Environment="GGML_X=a b"' in lines
    for setting in ("User=llama", "NoNewPrivileges=yes", "ProtectSystem=strict", "KillSignal=SIGINT",
                    "ReadOnlyPaths=/var/lib/llamarig/models", "StartLimitBurst=3"):
        assert setting in lines


def test_cpu_rig_unit_has_no_cuda_environment():
    doc, problems = validate_host("cpu", rig(gpus=[], services=[{"name": "c", "model": "gemma", "port": 1080}]))
    assert problems == []
    assert "CUDA_VISIBLE_DEVICES" not in unit_text("cpu", doc)


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
    lines = unit_text("garage", doc).splitlines()
    assert "After=network-online.target llamarig-power.service" in lines
    assert "Wants=network-online.target llamarig-power.service" in lines
