"""Every unit llamarig ships or generates is one well-formed systemd unit.

A small parser of unit syntax (``[Section]``, ``Key=Value``, ``#``/``;`` comments, lines ended as systemd ends
them) reads each unit of the example inventories and of services with awkward but valid values, and checks
that it holds exactly the sections and directives the template writes, that ``ExecStart=`` gives systemd
exactly the release's argv and ``Environment=`` exactly the service's environment, read the way systemd reads
them (specifiers, ``$`` variables, quotes and C escapes), and that nothing in it is a control character.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import unicodedata
from pathlib import Path

import pytest

from llamarig.hostdata.inventory import load_inventory
from llamarig.hostdata.validate import service_gpus, validate_all, validate_host
from llamarig.release.assemble import RigFacts, assumed_facts
from llamarig.release.power import boot_commands, declared_limits
from llamarig.release.unit import API_KEY_ARG, service_environment, systemd_split

from .helpers import release_of, rig

ROOT = Path(__file__).resolve().parents[2]
MODEL_FILE = "m-00001-of-00002.gguf"  # a model whose file the Hub would name

# --- the unit syntax -----------------------------------------------------------------------------------------

# Every directive of templates/llama-server.service.j2, by section; those listed in MULTI may repeat.
SERVER_DIRECTIVES = {
    "Unit": {"Description", "Wants", "After", "StartLimitIntervalSec", "StartLimitBurst"},
    "Service": {
        "Type", "User", "Group", "Environment", "LoadCredential", "ExecStart", "KillSignal", "TimeoutStopSec",
        "Restart", "RestartSec", "StateDirectory", "CacheDirectory", "WorkingDirectory", "UMask", "LimitMEMLOCK",
        "NoNewPrivileges", "CapabilityBoundingSet", "AmbientCapabilities", "PrivateUsers", "ProtectSystem",
        "ProtectHome", "PrivateTmp", "PrivateMounts", "ReadOnlyPaths", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
        "ProtectProc", "ProcSubset", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
        "MemoryDenyWriteExecute", "RemoveIPC", "RestrictAddressFamilies", "SystemCallArchitectures",
        "SystemCallFilter", "SystemCallErrorNumber", "PrivateDevices", "DevicePolicy", "DeviceAllow",
    },
    "Install": {"WantedBy"},
}
SERVER_MULTI = {"Environment", "SystemCallFilter", "DeviceAllow"}
POWER_DIRECTIVES = {
    "Unit": {"Description", "After", "Before"},
    "Service": {"Type", "RemainAfterExit", "ExecStart"},
    "Install": {"WantedBy"},
}
POWER_MULTI = {"ExecStart"}
SECTIONS = ["Unit", "Service", "Install"]

# systemd ends a line at \n, \r, \r\n or NUL (read_line()); a value must never hold one.
_LINE_END = re.compile(r"\r\n|\r|\n|\x00")


def template_directives(name: str) -> dict[str, set[str]]:
    """The directives a template writes, by section (Jinja tags and comments left out)."""
    out: dict[str, set[str]] = {}
    section = None
    for line in (ROOT / "templates" / name).read_text().splitlines():
        line = re.sub(r"\{%.*?%\}", "", line).strip()
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
            out[section] = set()
        elif (m := re.match(r"([A-Za-z]+)=", line)) and section:
            out[section].add(m.group(1))
    return out


def parse_unit(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(section, [(directive, raw value), ...]), ...] in the file's order, read as systemd reads it."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for n, line in enumerate(_LINE_END.split(text), 1):
        assert not line.endswith("\\"), f"line {n} continues on the next one: {line!r}"
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            m = re.fullmatch(r"\[([A-Za-z]+)\]", stripped)
            assert m, f"line {n} is no section header: {line!r}"
            sections.append((m.group(1), []))
            continue
        key, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), f"line {n} is no Key=Value: {line!r}"
        assert sections, f"line {n} is outside any section: {line!r}"
        sections[-1][1].append((key.strip(), value.lstrip()))
    return sections


def specifiers(text: str) -> str:
    """``text`` with systemd's specifiers resolved: ``%%`` is ``%``; any other ``%x`` becomes ``<%x>``."""
    return re.sub(r"%(.?)", lambda m: "%" if m.group(1) == "%" else f"<%{m.group(1)}>", text, flags=re.S)


def dollars(word: str) -> str:
    """``word`` as ExecStart= runs it: ``$$`` is ``$``; any other ``$`` starts a variable: ``<$...>``."""
    return re.sub(r"\$(.?)", lambda m: "$" if m.group(1) == "$" else f"<${m.group(1)}>", word, flags=re.S)


def words(value: str) -> list[tuple[str, bool]]:
    """systemd's words of a value (extract_first_word with quotes and C escapes): [(word, was it quoted)].

    Only the escapes systemd_quote writes (``\\\\``, ``\\"``, ``\\'``) are accepted: any other would be unescaped
    by systemd (``\\n`` into a newline), so the word would not be what was meant."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            return out
        word, quoted, quote = "", False, None
        while i < n and (quote or value[i] not in " \t"):
            c = value[i]
            if c == "\\":
                assert i + 1 < n and value[i + 1] in "\\\"'", f"a C escape systemd would unescape in {value!r}"
                word += value[i + 1]
                i += 2
                continue
            if quote is None and c in "\"'":
                quote, quoted = c, True
            elif c == quote:
                quote = None
            else:
                word += c
            i += 1
        assert quote is None, f"an unterminated quote in {value!r}"
        out.append((word, quoted))


def exec_argv(value: str) -> list[str]:
    """The argv systemd runs for an ExecStart= value (specifiers and variables marked, not expanded)."""
    found = words(value)
    assert all(w != ";" or quoted for w, quoted in found), f"an unquoted ; separates commands in {value!r}"
    return [dollars(specifiers(w)) for w, _ in found]


def environment_of(values: list[str]) -> list[tuple[str, str]]:
    """The (name, value) assignments of Environment= lines; each line one quoted-or-plain word."""
    out = []
    for value in values:
        found = words(specifiers(value))  # Environment= resolves specifiers first, then splits; no $ expansion
        assert len(found) == 1, f"Environment={value} is {len(found)} assignments, expected one"
        name, sep, assigned = found[0][0].partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"Environment={value} is no NAME=VALUE"
        out.append((name, assigned))
    return out


def check_text(text: str) -> None:
    for n, line in enumerate(text.split("\n"), 1):
        bad = [c for c in line if unicodedata.category(c) == "Cc"]
        assert not bad, f"line {n} holds control character(s) {bad!r}: {line!r}"
    assert text.endswith("\n") and not text.endswith("\n\n"), "a unit ends with exactly one newline"


def check_directives(sections, known: dict[str, set[str]], multi: set[str]) -> dict[str, list[str]]:
    """{directive: [values]} of a unit that has exactly SECTIONS, only ``known`` directives, singles once."""
    assert [name for name, _ in sections] == SECTIONS
    values: dict[str, list[str]] = {}
    for name, directives in sections:
        for key, value in directives:
            assert key in known[name], f"[{name}] {key}= is not a directive llamarig writes"
            values.setdefault(key, []).append(value)
    repeated = sorted(k for k, v in values.items() if len(v) > 1 and k not in multi)
    assert not repeated, f"directive(s) given more than once: {repeated}"
    return values


def expected_environment(doc: dict, svc: dict) -> list[tuple[str, str]]:
    env = list(service_environment(doc, svc).items())
    if doc["gpus"] and service_gpus(doc, svc):
        env.append(("CUDA_CACHE_PATH", f"<%C>/llamarig/{svc['name']}/cuda"))
    return env


def check_server_unit(doc: dict, svc: dict, u) -> dict[str, list[str]]:
    """Everything this file asserts of one service's unit; returns its directives."""
    check_text(u.text)
    values = check_directives(parse_unit(u.text), SERVER_DIRECTIVES, SERVER_MULTI)
    [exec_start] = values["ExecStart"]
    assert systemd_split(exec_start) == [u.binary, *u.argv]
    # read as systemd reads it: only the API key's credential path is a specifier (%d, on purpose)
    assert exec_argv(exec_start) == [u.binary, *(w.replace("%d", "<%d>") if w == API_KEY_ARG else w for w in u.argv)]
    assert environment_of(values.get("Environment", [])) == expected_environment(doc, svc)
    assert [w for w, _ in words(specifiers(values["ReadOnlyPaths"][0]))] == [doc["models_dir"]]
    assert values["Description"] == [f"llama-server {svc['name']} ({svc['model']})"]
    for key in ("StateDirectory", "CacheDirectory"):
        assert values[key] == [f"llamarig/{svc['name']}"]
    assert values["WorkingDirectory"] == [f"%S/llamarig/{svc['name']}"]
    return values


def check_power_unit(doc: dict, text: str) -> None:
    check_text(text)
    values = check_directives(parse_unit(text), POWER_DIRECTIVES, POWER_MULTI)
    commands = boot_commands(declared_limits(doc), doc["power_persistence_mode"], len(doc["gpus"]))
    assert values["ExecStart"] == ["-/usr/bin/nvidia-modprobe -u -c0", *commands]
    assert [exec_argv(v) for v in values["ExecStart"]] == [v.split() for v in values["ExecStart"]]


def test_the_known_directives_are_the_templates():
    """The sets above are what the templates write: a directive added there is added here, knowingly."""
    assert template_directives("llama-server.service.j2") == SERVER_DIRECTIVES
    assert template_directives("llamarig-power.service.j2") == POWER_DIRECTIVES


# --- the example inventories ---------------------------------------------------------------------------------

def demo_state(workdir: Path) -> None:
    """The testbed's state file inventory/demo.py reads (``python -m testbed up`` writes the real one)."""
    (workdir / "testbed.json").write_text(json.dumps({
        "ready": True, "hub_url": "http://127.0.0.1:5000", "git_url": "git://127.0.0.1:9418",
        "llama_cpp": {"repo": "git://127.0.0.1:9418/llama.cpp", "tag": "b7100"},
        "model_repo": "ggml-org/gemma-3-270m-GGUF", "ssh_key": str(workdir / "id_ed25519"),
        "rigs": [{"name": "demo", "ssh_port": 2201, "dir": str(workdir / "rigs" / "demo"), "gpus": "3090,3090"}],
    }))


def inventory_services() -> list[tuple[str, str, dict, str]]:
    """(label, host, doc, service name) of every service of every host of the example inventories."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        demo_state(Path(tmp))
        before = os.environ.get("LLAMARIG_DEMO_DIR")
        os.environ["LLAMARIG_DEMO_DIR"] = tmp
        try:
            for inventory in ("inventory/home.py", "inventory/seeds.py", "inventory/demo.py", "inventory/rpc.py"):
                entries = load_inventory(ROOT / inventory, cwd=ROOT)  # group_data/ as pyinfra run from the repo
                docs, problems = validate_all([(e.name, e.data) for e in entries])
                assert not problems, problems
                assert list(docs) == [e.name for e in entries]
                out += [(f"{Path(inventory).stem}-{host}-{svc['name']}", host, doc, svc["name"])
                        for host, doc in docs.items() for svc in doc["services"]]
        finally:
            if before is None:
                del os.environ["LLAMARIG_DEMO_DIR"]
            else:
                os.environ["LLAMARIG_DEMO_DIR"] = before
    return out


INVENTORY_SERVICES = inventory_services()


def release(host: str, doc: dict, facts: RigFacts | None = None):
    files = {name: MODEL_FILE for name, m in doc["models"].items() if not m["file"]}
    return release_of(host, doc, facts or assumed_facts(doc)[0], files=files)


def test_every_example_inventory_has_services():
    labels = [label for label, *_ in INVENTORY_SERVICES]
    assert {label.split("-", 1)[0] for label in labels} == {"home", "seeds", "demo", "rpc"}
    assert "demo-demo-chat" in labels and "seeds-glm52-sidecar-qwen" in labels


@pytest.mark.parametrize("label, host, doc, name", INVENTORY_SERVICES, ids=[s[0] for s in INVENTORY_SERVICES])
def test_every_example_unit_is_one_well_formed_unit(label, host, doc, name):
    found = release(host, doc)
    svc = next(s for s in doc["services"] if s["name"] == name)
    check_server_unit(doc, svc, found.units[f"llamarig-{name}.service"])
    assert found.power_unit is not None
    check_power_unit(doc, found.power_unit)


# --- generated services with awkward but valid values --------------------------------------------------------

AWKWARD_ARGS = [
    "--override-tensor", "blk\\.(3|4|5)\\.ffn_(gate|up|down)_exps\\.=CUDA1",
    "--chat-template", "{% if messages %}\"quoted\" 'single' $HOME ${USER} $$ 100% %d %% \\n \\t \\{% endif %}",
    "--system-prompt=Be brief; say \"hi\" to $USER at 50% load",
    "--override-kv", "tokenizer.ggml.pre=str:a b",
    ";", "'", "\"", "\\", "%", "$", "a;b", "-", "--",
    "C:\\path\\with spaces\\",
    "ünïcödé ✓ 日本",
]
AWKWARD_ENV = {
    "GGML_NOTE": "a b \"c\" 'd' 100% $HOME ${X} \\n \\ end\\",
    "PERCENT": "%d%%%",
    "DOLLARS": "$$ $",
    "EMPTY": "",
    "SPACES": "  padded  ",
    "EQUALS": "a=b=c",
}
AWKWARD_ALIAS = 'my "gemma" 3 at 100% of $HOME'
SAMPLING = {"temp": 0.7, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}


def awkward_service(name: str = "chat", **more) -> dict:
    return {"name": name, "model": "gemma", "port": 8080, "ctx_size": 4096, "parallel": 2, "alias": AWKWARD_ALIAS,
            "sampling": dict(SAMPLING), "extra_args": list(AWKWARD_ARGS), "environment": dict(AWKWARD_ENV),
            "tensor_overrides": [["blk\\.(3|4)\\.ffn_.*_exps\\.", "CUDA0"], ["\\.ffn_.*_exps.", "CPU"]], **more}


GENERATED = {
    "gpu": dict(services=[awkward_service(gpus=[0, 1], tensor_split=[1, 1], api_key_env="CHAT_KEY", shared_gpus=True),
                          {"name": "embed", "model": "gemma", "port": 8081, "gpus": [1], "shared_gpus": True,
                           "alias": "embed me", "environment": {"X": "%"}}],
                power_limit_w=300, power_limits_w={1: 200.5}),
    "gpu-no-persistence": dict(services=[awkward_service(gpus=[0])], power_persistence_mode=False),
    "cpu": dict(gpus=[], services=[awkward_service(api_key_file="/etc/llamarig/chat.key",
                                                   tensor_overrides=[["\\.ffn_.*_exps.", "CPU"]])]),
    "ik": dict(build_fork="ik_llama.cpp", build_git_url="https://github.com/ikawrakow/ik_llama.cpp",
               services=[awkward_service(name="ik-chat_2")]),
    "odd-paths": dict(build_root="/opt/llama-rig+x,y=z@1", models_dir="/srv/models.d/v1-2_3",
                      services=[awkward_service()]),
}


def generated_doc(case: str, monkeypatch) -> dict:
    monkeypatch.setenv("CHAT_KEY", "sk-wellformed-0001")
    doc, problems = validate_host("gen", rig(**copy.deepcopy(GENERATED[case])))
    assert problems == []
    return doc


@pytest.mark.parametrize("case", list(GENERATED))
def test_every_generated_unit_is_one_well_formed_unit(case, monkeypatch):
    doc = generated_doc(case, monkeypatch)
    for facts in [RigFacts(False)] + ([RigFacts(True, ("86",))] if doc["gpus"] else []):  # CPU and CUDA builds
        found = release("gen", doc, facts)
        for svc in doc["services"]:
            u = found.units[f"llamarig-{svc['name']}.service"]
            values = check_server_unit(doc, svc, u)
            argv = list(u.argv)
            if argv[-2:] == ["--api-key-file", API_KEY_ARG]:
                argv = argv[:-2]
            assert argv[len(argv) - len(svc["extra_args"]):] == svc["extra_args"]  # last but the key, verbatim
            assert argv[argv.index("--alias") + 1] == svc["alias"]
            assert ("LoadCredential" in values) == bool(svc["api_key_env"] or svc["api_key_file"])
        if doc["gpus"]:
            check_power_unit(doc, found.power_unit)
        else:
            assert found.power_unit is None


# --- a newline in a value must not become a line of the unit ------------------------------------------------

BREAKS = {"a newline": "\n", "a carriage return": "\r"}
INJECTED = "ExecStartPre=/bin/touch /tmp/owned"

# field -> (how to put a value into the validated doc's first service, words its ValueError may name it by)
FIELDS = {
    "extra_args": (lambda svc, v: svc["extra_args"].append(v), ("extra_args", "argument")),
    "environment": (lambda svc, v: svc["environment"].update(NOTE=v), ("environment",)),
    "alias": (lambda svc, v: svc.update(alias=v), ("alias", "argument")),
    "name": (lambda svc, v: svc.update(name=v), ("name",)),
}


def test_a_line_break_inside_a_value_is_refused_or_stays_inside_its_directive(monkeypatch):
    """Validation refuses control characters; the renderer must not depend on it. Each value goes straight into
    make_release: either render_unit raises a ValueError naming the field, or the unit has exactly the
    directives and the argv it would have without the break (no ExecStartPre= smuggled in)."""
    base = generated_doc("gpu", monkeypatch)
    problems = []
    for field, (put, names) in FIELDS.items():
        for what, brk in BREAKS.items():
            doc = copy.deepcopy(base)
            svc = doc["services"][0]
            put(svc, f"x{brk}{INJECTED}")
            try:
                found = release("gen", doc)
            except ValueError as exc:
                if not any(name in str(exc) for name in names):
                    problems.append(f"{field} with {what}: the ValueError does not name the field: {exc}")
                continue
            u = found.units[f"llamarig-{svc['name']}.service"]
            try:
                check_server_unit(doc, svc, u)
            except AssertionError as exc:
                problems.append(f"{field} with {what}: {str(exc).splitlines()[0]}")
    assert problems == []


@pytest.mark.parametrize("models_dir", ["/srv/models%d", '/srv/mo"dels', "/srv/it's", "/srv/mo\\dels"])
def test_a_valid_models_dir_reaches_read_only_paths_as_declared(models_dir):
    """A path systemd would read with its own syntax (specifiers, quotes, escapes) never reaches a unit."""
    doc, problems = validate_host("gen", rig(models_dir=models_dir))
    assert [p.path for p in problems] == ["models_dir"]
    assert "a path of letters, digits" in problems[0].expected
