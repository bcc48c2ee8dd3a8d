"""Render the systemd unit of a service: quoting, environment, the template.

Flags are computed in ``flags.py`` and assembled with the binary in
``assemble.py``; this module only turns them into a unit file. Templates get
finished, quoted strings (pyinfra renders with
StrictUndefined, and so do we).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import jinja2

from llamarig import layout
from llamarig.hostdata.validate import service_gpus
from llamarig.release import rpc

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def _plain(what: str, text: str) -> str:
    """``text``, refused when it holds a control character (validation refuses them first; this is the
    renderer's own guard: no value may write a second line into a unit)."""
    if _CONTROL.search(text):
        raise ValueError(f"{what} holds a control character ({text!r}): it would write another line into the unit")
    return text


def systemd_quote(word: str, *, dollar: bool = True) -> str:
    """Quote one word for ExecStart= (or Environment=, ``dollar=False``) so systemd passes it verbatim.

    systemd expands ``%`` specifiers everywhere, ``$VAR`` in ExecStart= only,
    and unescapes C-style backslash sequences in quoted words; regular
    expressions are full of backslashes, so every one is doubled.
    """
    escaped = _plain("an argument or environment value", word).replace("%", "%%")
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
    env: dict[str, str] = {}
    if doc["gpus"]:
        gpus = service_gpus(doc, service)
        # PCI bus order makes CUDA's device numbers match nvidia-smi's indices.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus) if gpus else "-1"
    env["HOME"] = layout.service_home(service["name"])
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
    for text in (host, *commands):
        _plain("the power unit", text)
    return _env().get_template("llamarig-power.service.j2").render(host=host, commands=commands)


# The server reads its API key from the credential systemd passes it (LoadCredential=); %d is the
# credentials directory, so the key is in no unit, no argv and no environment.
API_KEY_CREDENTIAL = "api-key"
API_KEY_ARG = "%d/" + API_KEY_CREDENTIAL


def has_api_key(service: dict) -> bool:
    return bool(service.get("api_key_env") or service.get("api_key_file"))


def _exec_word(word: str) -> str:
    return word if word == API_KEY_ARG else systemd_quote(word)


def render_unit(host: str, doc: dict, service: dict, model, binary: str, argv: list[str]) -> str:
    """The unit text of ``service`` on rig ``host``, running ``binary`` with ``argv``.

    ``model`` is the service's resolved model (``llamarig.lookups.hub.ResolvedModel``). The release
    (``llamarig/release/assemble.py``) passes the build's own prefix and the model's revision
    directory, so a unit names exactly what it runs: restoring an earlier unit file restores all of it.
    """
    declared = doc["models"][service["model"]]
    shown = dict(name=service["model"], repo=declared["repo"], revision=declared["revision"], commit=model.commit)
    exec_start = " ".join(_exec_word(w) for w in [binary, *argv])
    gpus = service_gpus(doc, service)
    for what, text in (("the host name", host), ("the service name", service["name"]),
                       ("the model name", shown["name"]), ("the model repository", shown["repo"]),
                       ("the model revision", shown["revision"]), ("the model commit", str(shown["commit"])),
                       ("the service user", doc["service_user"]), ("models_dir", doc["models_dir"]),
                       ("the binary", binary)):
        _plain(what, text)
    return _env().get_template("llama-server.service.j2").render(
        host=host,
        service=service,
        model=shown,
        user=doc["service_user"],
        environment=environment_lines(service_environment(doc, service)),
        exec_start=exec_start,
        models_dir=doc["models_dir"],
        power_unit=POWER_UNIT if doc["gpus"] else None,
        gpu=bool(doc["gpus"]) and bool(gpus),
        credential=f"{API_KEY_CREDENTIAL}:{layout.api_key_file(service['name'])}" if has_api_key(service) else None,
        rpc=_plain("the RPC devices", rpc.describe(service)),
    )


def rpc_argv(doc: dict, server: dict) -> list[str]:
    """rpc-server's arguments (no program name): the declared address and port, the lent devices, threads,
    the tensor cache."""
    from llamarig.hostdata.rpc_links import lent_gpus
    gpus = lent_gpus(doc, server)
    # CUDA_VISIBLE_DEVICES leaves only the lent GPUs, numbered from 0 as the server names them
    devices = ",".join(f"CUDA{k}" for k in range(len(gpus))) if gpus else "CPU"
    args = ["--host", server["host"], "--port", str(server["port"]), "--device", devices]
    if server["threads"]:
        args += ["--threads", str(server["threads"])]
    if server["cache"]:
        args.append("--cache")
    return args


def render_rpc_unit(host: str, doc: dict, server: dict, binary: str, argv: list[str], prune: list[str]) -> str:
    """The unit of one rpc-server: hardened like a llama-server unit; only the lent GPUs are visible."""
    from llamarig.hostdata.rpc_links import endpoint, lent_gpus
    gpus = lent_gpus(doc, server)
    env: dict[str, str] = {}
    if doc["gpus"]:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus) if gpus else "-1"
    env["HOME"] = layout.rpc_home(server["name"])
    env["LLAMA_CACHE"] = posixpath.dirname(layout.rpc_cache(server["name"]))
    lends = (", ".join(f"GPU {g} ({doc['gpus'][g]['model']})" for g in gpus) if gpus
             else f"its CPU ({doc['ram_gib']:g} GiB of RAM)")
    for what, text in (("the host name", host), ("the RPC server's address", server["host"]),
                       ("the service user", doc["service_user"]), ("the binary", binary)):
        _plain(what, text)
    return _env().get_template("llamarig-rpc.service.j2").render(
        host=host, server=server, lends=lends, endpoint=endpoint(server), user=doc["service_user"],
        environment=environment_lines(env), gpu=bool(gpus),
        power_unit=POWER_UNIT if doc["gpus"] else None,
        exec_start=" ".join(systemd_quote(w) for w in [binary, *argv]),
        prune=" ".join(systemd_quote(w) for w in prune))
