"""Render the systemd unit of a service: quoting, environment, the template.

Flags are computed in ``flags.py``; this module only turns them into a unit
file. Templates get finished, quoted strings (pyinfra renders with
StrictUndefined, and so do we).
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2

from llamarig import layout
from llamarig.release.flags import server_args

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def systemd_quote(word: str, *, dollar: bool = True) -> str:
    """Quote one word for ExecStart= (or Environment=, ``dollar=False``) so systemd passes it verbatim.

    systemd expands ``%`` specifiers everywhere, ``$VAR`` in ExecStart= only,
    and unescapes C-style backslash sequences in quoted words; regular
    expressions are full of backslashes, so every one is doubled.
    """
    escaped = word.replace("%", "%%")
    if dollar:
        escaped = escaped.replace("$", "$$")
    if escaped and _SAFE.match(escaped):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def systemd_split(line: str) -> list[str]:
    """Split an ExecStart= value into the argv systemd passes (the inverse of ``systemd_quote``)."""
    words: list[str] = []
    word, quoted, i, has_word = "", False, 0, False
    while i < len(line):
        c = line[i]
        if quoted:
            if c == "\\" and i + 1 < len(line):
                word += line[i + 1]
                i += 2
                continue
            if c == '"':
                quoted = False
            else:
                word += c
        elif c == '"':
            quoted, has_word = True, True
        elif c.isspace():
            if has_word:
                words.append(word)
            word, has_word = "", False
        else:
            word += c
            has_word = True
        i += 1
    if has_word:
        words.append(word)
    return [w.replace("%%", "%").replace("$$", "$") for w in words]


def environment_lines(env: dict[str, str]) -> list[str]:
    return [systemd_quote(f"{key}={value}", dollar=False) for key, value in env.items()]


def service_environment(doc: dict, service: dict) -> dict[str, str]:
    from llamarig.hostdata.validate import service_gpus

    env: dict[str, str] = {}
    if doc["gpus"]:
        gpus = service_gpus(doc, service)
        # PCI bus order makes CUDA's device numbers match nvidia-smi's indices.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus) if gpus else "-1"
    env["HOME"] = f"/var/lib/llamarig/{service['name']}"
    env.update(service["environment"])
    return env


def _env():
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


POWER_UNIT = "llamarig-power.service"


def render_power_unit(host: str, commands: list[str]) -> str:
    return _env().get_template("llamarig-power.service.j2").render(host=host, commands=commands)


# The server reads its API key from the credential systemd passes it (LoadCredential=); %d is the
# credentials directory, so the key is in no unit, no argv and no environment.
API_KEY_CREDENTIAL = "api-key"
API_KEY_ARG = "%d/" + API_KEY_CREDENTIAL


def has_api_key(service: dict) -> bool:
    return bool(service.get("api_key_env") or service.get("api_key_file"))


def service_argv(doc: dict, service: dict, model_file: str, revision: str | None = None) -> list[str]:
    """llama-server's arguments for ``service`` (no program name).

    ``model_file`` is relative to the model's repository and ``revision`` is the resolved commit
    (offline, without one, the declared revision names the directory).
    """
    revision = revision or doc["models"][service["model"]]["revision"]
    path = layout.model_path(doc["models_dir"], service["model"], revision, model_file)
    args = server_args(service, path, doc["build_fork"])
    if has_api_key(service):
        args += ["--api-key-file", API_KEY_ARG]
    return args


def _exec_word(word: str) -> str:
    return word if word == API_KEY_ARG else systemd_quote(word)


def render_unit(host: str, doc: dict, service: dict, model_file: str, revision: str | None = None,
                prefix: str | None = None) -> str:
    """The unit text of ``service`` on rig ``host``.

    ``model_file`` is relative to the model's repository, ``revision`` its resolved commit and
    ``prefix`` the build's install prefix. At deploy both are known, so a unit names exactly the
    binary and model files it runs: restoring an earlier unit file restores all of it (the rollback).
    """
    model = dict(doc["models"][service["model"]], name=service["model"], commit=revision)
    binary = layout.server_binary(doc["build_root"], doc["build_fork"], prefix)
    args = service_argv(doc, service, model_file, revision)
    exec_start = " ".join(_exec_word(w) for w in [binary, *args])
    return _env().get_template("llama-server.service.j2").render(
        host=host,
        service=service,
        model=model,
        user=doc["service_user"],
        environment=environment_lines(service_environment(doc, service)),
        exec_start=exec_start,
        models_dir=doc["models_dir"],
        power_unit=POWER_UNIT if doc["gpus"] else None,
        gpu=bool(doc["gpus"]) and bool(service_gpus_of(doc, service)),
        credential=f"{API_KEY_CREDENTIAL}:{layout.api_key_file(service['name'])}" if has_api_key(service) else None,
    )


def service_gpus_of(doc: dict, service: dict) -> list[int]:
    from llamarig.hostdata.validate import service_gpus
    return service_gpus(doc, service)


def rig_units(host: str, doc: dict, models: dict, prefix: str | None) -> dict[str, str]:
    """Unit file name -> text for every service of a rig (``models``: name -> ResolvedModel); the one
    rendering the deploy installs, the lock digests and the preflight compares."""
    return {
        layout.unit_name(svc["name"]): render_unit(host, doc, svc, models[svc["model"]].file,
                                                   models[svc["model"]].commit, prefix)
        for svc in doc["services"]
    }
