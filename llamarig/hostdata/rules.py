"""The rules across keys, and the single values the data alone decides, of one host's normalized data.

``cross_check`` (ports, names, GPUs, tensor splits and overrides, placement, forks) and
``value_problems`` (``llamarig/hostdata/values.py``: addresses, ports, paths, refs, URLs,
power, environment) read a document the schema took, or its sanitized remainder
(``validate.py``): each rule skips a shape the schema already refused.
"""

from __future__ import annotations

import fnmatch
import re

from llamarig.forks.options import canonical, fork_problems
from llamarig.hostdata import messages, values
from llamarig.hostdata.problems import Key, Masked, Problem
from llamarig.hostdata.schema import FORKS


PLACEMENT_FLAGS = ("-ngl", "--gpu-layers", "--n-gpu-layers", "-ts", "--tensor-split", "-ot", "--override-tensor",
                   "-ncmoe", "--n-cpu-moe", "-cmoe", "--cpu-moe", "--fit", "-fit")


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW", re.I)


# llama-server's flags that carry a secret on its command line, readable by every local user (/proc/PID/cmdline),
# and the keys that keep them off it.
KEY_FLAGS = ("--api-key", "--api-key-file")
TOKEN_FLAGS = ("--hf-token", "-hft")
_SECRET_VALUE_FLAGS = ("--api-key",) + TOKEN_FLAGS   # flags whose value is the secret itself (masked)


def _flag_of(arg: str) -> str:
    return re.split(r"[=\s]", arg.strip(), maxsplit=1)[0]


def _api_key_flag(arg) -> bool:
    """An extra_args item that is --api-key or --api-key-file, however its value is attached."""
    return isinstance(arg, str) and _flag_of(arg) in KEY_FLAGS


def _token_flag(arg) -> bool:
    """An extra_args item that is --hf-token (-hft), however its value is attached."""
    return isinstance(arg, str) and _flag_of(arg) in TOKEN_FLAGS


def _secret_arg(args, j: int) -> bool:
    """extra_args[j] is an API key or a Hub token, or holds one (never shown)."""
    arg = args[j]
    if not isinstance(arg, str):
        return False
    return (j > 0 and isinstance(args[j - 1], str) and args[j - 1].strip() in _SECRET_VALUE_FLAGS) or (
        _flag_of(arg) in _SECRET_VALUE_FLAGS and arg.strip() not in _SECRET_VALUE_FLAGS)


def value_problems(host: str, doc: dict) -> list[Problem]:
    """Single values the data alone shows a deploy would refuse (llamarig/hostdata/values.py)."""
    out = []

    def check(path, value, why):
        if why:
            out.append(Problem(host, path, value, why))

    def each(path, value, rule, *args):
        if value is None:
            return  # unset, or refused by the schema already
        try:
            check(path, value, rule(value, *args))
        except (TypeError, ValueError, AttributeError):
            pass  # a shape the schema refused

    each("build_git_url", doc["build_git_url"], values.git_url)
    each("build_ref", doc["build_ref"], values.git_ref)
    for key in ("build_root", "models_dir"):
        each(key, doc[key], values.absolute_path)
    each("build_ccache_dir", doc["build_ccache_dir"], values.absolute_path)
    each("hub_endpoint", doc["hub_endpoint"], values.http_url)
    each("hub_client", doc["hub_client"], values.pip_requirement, "huggingface_hub")
    each("hub_token_file", doc["hub_token_file"], values.not_null_word)
    for i, package in enumerate(doc["build_packages"] or []):  # None: refused by the schema
        each(f"build_packages[{i}]", package, values.debian_package)
    each("power_limit_w", doc["power_limit_w"], values.power_limit)
    for index, watts in (doc["power_limits_w"] or {}).items():
        each(f"power_limits_w[{index}]", watts, values.power_limit)
    for name, model in (doc["models"] or {}).items():
        if not isinstance(model, dict):
            continue  # refused by the schema
        each(f"models.{name}.repo", model["repo"], values.hub_repo)
        each(f"models.{name}.revision", model["revision"], values.git_ref)
        each(f"models.{name}.file", model["file"], values.relative_path)
        for j, pattern in enumerate(model["include"] or []):
            if isinstance(pattern, str) and (".." in pattern.split("/") or pattern.startswith("/")):
                check(f"models.{name}.include[{j}]", pattern, "a pattern inside the repository (relative, no '..')")
    for i, svc in enumerate(doc["services"] or []):
        if not isinstance(svc, dict):
            continue  # refused by the schema
        where = f"services[{i}]"
        each(f"{where}.host", svc["host"], values.bind_address)
        for key in ("host", "api_key_file"):
            each(f"{where}.{key}", svc[key], values.not_null_word)
        each(f"{where}.port", svc["port"], values.service_port)
        for j, arg in enumerate(svc["extra_args"]):
            if not (_api_key_flag(arg) or _secret_arg(svc["extra_args"], j)):  # reported, masked, by cross_check
                each(f"{where}.extra_args[{j}]", arg, values.extra_arg)
        for key in svc["environment"]:
            each(f"{where}.environment", Key(key), values.environment_key)
    return out


def service_gpus(doc: dict, service: dict) -> list[int]:
    """The rig GPU indices a service uses (null means all of the rig's)."""
    if service["gpus"] is None:
        return list(range(len(doc["gpus"])))
    return list(service["gpus"])


RESERVED_NAMES = {"power"}  # llamarig-power.service is the boot-time power unit


_DEVICE = re.compile(r"(CPU|CUDA(\d+))")
# flags llamarig renders itself from keys its checks rely on: in extra_args they would override them
_OWNED = {"--model": "the service's model (models.NAME) sets it", "--port": "the key port sets it",
          "--host": "the key host sets it", "--rpc": "rpc_workers sets it"}
# what the planner plans memory for from the typed key: in extra_args the server would run another setting
_PLANNED = {"--ctx-size": "ctx_size", "--ubatch-size": "ubatch_size", "--batch-size": "batch_size",
            "--parallel": "parallel", "--flash-attn": "flash_attn", "--cache-type-k": "cache_type_k",
            "--cache-type-v": "cache_type_v", "--mla-use": "mla_use"}
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/@:]*):([^/@]+)@")  # scheme://user:SECRET@host
_HTTP_USERINFO = re.compile(r"^(?i:https?)://([^/@]+)@")  # https://TOKEN@host or https://user:TOKEN@host
_RPC_DEVICE = re.compile(r"RPC\d+\[[^\]]+\]")  # llama.cpp's name of a device through RPC: RPC0[10.0.0.2:50052]


def cross_check(host: str, doc: dict) -> list[Problem]:
    problems: list[Problem] = []

    def bad(path, value, expected):
        problems.append(Problem(host, path, value, expected))

    # Whatever the schema refused as a whole is None here: the rules that need it are skipped.
    n_gpus = len(doc["gpus"]) if isinstance(doc["gpus"], list) else None

    archs = doc["build_cuda_architectures"]
    if isinstance(archs, str):
        if archs != "auto":
            items = [a.strip() for a in re.split(r"[,;\s]+", archs.strip()) if a.strip()]
            hint = " (did you mean auto?)" if archs.strip().lower() == "auto" else ""
            if items and all(values.cuda_architecture(a) is None for a in items):  # '86' or '86;89'
                hint = f" (a list even for one: {[int(a) if a.isdigit() else a for a in items]!r})"
            bad("build_cuda_architectures", archs, "`auto` or a list of architectures such as [86, 89]" + hint)
    elif not archs:
        bad("build_cuda_architectures", archs, "`auto` or at least one architecture such as [86]")
    else:
        for i, arch in enumerate(archs):
            why = values.cuda_architecture(arch)
            if why:
                bad(f"build_cuda_architectures[{i}]", arch, why)

    targets = doc["build_targets"]
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets) and "llama-server" not in targets:
        bad("build_targets", doc["build_targets"], "a list that includes llama-server")
    for i, other in enumerate(doc.get("tune_forks") or []):
        if isinstance(other, dict) and isinstance(other.get("build_targets"), list) and \
                "llama-server" not in other["build_targets"]:
            bad(f"tune_forks[{i}].build_targets", other["build_targets"], "a list that includes llama-server")

    for path, url in [("build_git_url", doc["build_git_url"])] + [
            (f"tune_forks[{i}].build_git_url", t.get("build_git_url")) for i, t in enumerate(doc.get("tune_forks") or [])
            if isinstance(t, dict)]:
        secret = (_HTTP_USERINFO.match(url) or _URL_PASSWORD.match(url)) if isinstance(url, str) else None
        if secret:
            g = secret.lastindex  # the part to hide: an http(s) URL's whole user part, another's password
            bad(path, Masked(url[:secret.start(g)] + "***" + url[secret.end(g):]),
                "a URL without a password or token in it (it would be written into the build record, the rig's "
                "git config and the deploy's output): use a public URL, or a credential helper on the rig")
    if doc["service_user"] == "root":
        bad("service_user", doc["service_user"], "a user other than root (the hardened units run the servers unprivileged)")

    if doc["power_limit_w"] is not None and n_gpus == 0:
        bad("power_limit_w", doc["power_limit_w"], "null on a rig without GPUs")
    for index in doc["power_limits_w"] or {}:
        if n_gpus is not None and index >= n_gpus:
            bad(f"power_limits_w[{index}]", doc["power_limits_w"][index],
                f"a GPU index below {n_gpus} (the rig declares {n_gpus} GPU(s))")

    for name, model in (doc["models"] or {}).items():
        if not isinstance(model, dict):
            continue  # refused by the schema
        if model["file"] is not None and all(isinstance(pat, str) for pat in model["include"]) and not any(
                fnmatch.fnmatchcase(model["file"], pat) for pat in model["include"]):
            bad(f"models.{name}.file", model["file"], f"a file matched by include {model['include']}")
        if model["file"] is not None and not model["file"].endswith(".gguf"):
            bad(f"models.{name}.file", model["file"], "a .gguf file")

    seen_names: dict[str, int] = {}
    seen_ports: dict[int, int] = {}
    used_gpus: dict[int, int] = {}
    for i, svc in enumerate(doc["services"] or []):
        try:
            _service_rules(doc, i, svc, bad, seen_names, seen_ports, used_gpus, n_gpus)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            continue  # a shape the schema refused: its problems are reported already
    try:
        _rpc_server_rules(doc, bad, seen_names, seen_ports, used_gpus, n_gpus)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        pass
    return problems


WILDCARDS = ("0.0.0.0", "::", "[::]", "*", "")


def _rpc_server_rules(doc, bad, service_names, service_ports, used_gpus, n_gpus) -> None:
    """A rig's rpc_servers: names and ports its own, lent GPUs nobody else uses, no wildcard bind unless said."""
    seen: dict[str, int] = {}
    ports: dict[int, str] = {}
    lent: dict[int, int] = {}
    if doc["rpc_servers"] and doc["build_fork"] != "llama.cpp":
        bad("rpc_servers", [s.get("name") for s in doc["rpc_servers"] if isinstance(s, dict)],
            "[] on an ik_llama.cpp rig (llamarig runs llama.cpp's rpc-server only; build_fork: llama.cpp)")
    for i, srv in enumerate(doc["rpc_servers"] or []):
        where = f"rpc_servers[{i}]"
        if srv["name"] in seen:
            bad(f"{where}.name", srv["name"], f"a name no other RPC server of this rig has (rpc_servers[{seen[srv['name']]}] has it)")
        seen.setdefault(srv["name"], i)
        if f"rpc-{srv['name']}" in service_names:
            bad(f"{where}.name", srv["name"], f"a name whose unit llamarig-rpc-{srv['name']}.service is no service's "
                                              f"(services[{service_names[f'rpc-' + srv['name']]}] is named rpc-{srv['name']})")
        port = srv["port"]
        if port in ports or port in service_ports:
            other = ports.get(port) or f"services[{service_ports[port]}]"
            bad(f"{where}.port", port, f"a port no service or other RPC server of this rig uses ({other} has it)")
        ports.setdefault(port, where)
        if srv["host"] in WILDCARDS or srv["host"].strip("[]") in ("0.0.0.0", "::"):
            if not srv["any_address"]:
                bad(f"{where}.host", srv["host"], "one address of a private network (rpc-server has no authentication: "
                                                  "a wildcard bind needs any_address: true)")
            if not srv["address"]:
                bad(f"{where}.address", srv["address"], "the address main rigs connect to (host binds a wildcard)")
        gpus = srv["gpus"] if srv["gpus"] is not None else list(range(n_gpus or 0))
        for j, g in enumerate(gpus):
            if n_gpus is not None and g >= n_gpus:
                bad(f"{where}.gpus[{j}]", g, f"a GPU index below {n_gpus} (the rig declares {n_gpus} GPU(s))")
            elif g in used_gpus:
                bad(f"{where}.gpus", srv["gpus"], f"GPUs no service of this rig uses (GPU {g} is in services[{used_gpus[g]}])")
            elif g in lent:
                bad(f"{where}.gpus", srv["gpus"], f"GPUs no other RPC server lends (GPU {g} is in rpc_servers[{lent[g]}])")
            lent.setdefault(g, i)
        if not gpus and doc["ram_gib"] is None:
            bad(f"{where}.gpus", srv["gpus"], "GPUs to lend, or ram_gib set (a lent CPU is planned with the rig's RAM)")


def _service_rules(doc, i, svc, bad, seen_names, seen_ports, used_gpus, n_gpus) -> None:
    """The cross-field rules of one service (``bad`` records a problem)."""
    where = f"services[{i}]"
    if svc["name"] in seen_names:
        bad(f"{where}.name", svc["name"], f"a name no other service of this rig has (services[{seen_names[svc['name']]}] has it)")
    seen_names.setdefault(svc["name"], i)
    if svc["name"] in RESERVED_NAMES:
        bad(f"{where}.name", svc["name"], f"a name other than {', '.join(sorted(RESERVED_NAMES))} (llamarig's own units use them)")
    if svc["port"] in seen_ports:
        bad(f"{where}.port", svc["port"], f"a port no other service of this rig uses (services[{seen_ports[svc['port']]}] has it)")
    seen_ports.setdefault(svc["port"], i)
    if doc["models"] is not None and svc["model"] not in doc["models"]:
        declared = ", ".join(sorted(doc["models"])) or "none"
        bad(f"{where}.model", svc["model"], f"a model declared under `models` (declared: {declared})")

    gpus = svc["gpus"] if svc["gpus"] is not None else list(range(n_gpus)) if n_gpus is not None else None
    if gpus is not None and not all(isinstance(g, int) for g in gpus):
        gpus = None  # the schema refused an index
    if gpus is None:  # unknown: the rules that need the service's GPUs are skipped
        _service_rules_without_gpus(doc, where, svc, bad)
        return
    for j, index in enumerate(gpus):
        if n_gpus is not None and index >= n_gpus:
            bad(f"{where}.gpus[{j}]", index, f"a GPU index below {n_gpus} (the rig declares {n_gpus} GPU(s))")
    if len(set(gpus)) != len(gpus):
        bad(f"{where}.gpus", gpus, "each GPU at most once")
    for index in gpus:
        other = used_gpus.get(index)
        if other is not None and not (svc["shared_gpus"] and doc["services"][other]["shared_gpus"]):
            bad(f"{where}.gpus", gpus,
                f"GPUs not used by another service, or shared_gpus: true on both (GPU {index} is also in services[{other}])")
            break
    for index in gpus:
        used_gpus.setdefault(index, i)

    split = svc["tensor_split"]
    if split is not None and not all(isinstance(x, (int, float)) for x in split):
        split = None  # the schema refused an item
    if split is not None and len(split) != len(gpus) and not svc["rpc_workers"]:  # with workers: rpc_links.py
        bad(f"{where}.tensor_split", split, f"{len(gpus)} proportion(s), one per service GPU")
    if split is not None and not any(split):
        bad(f"{where}.tensor_split", svc["tensor_split"], "at least one non-zero proportion")
    if svc["main_gpu"] is not None and svc["main_gpu"] >= max(len(gpus), 1):
        bad(f"{where}.main_gpu", svc["main_gpu"], f"an index below {len(gpus)} into the service's GPUs")
    _service_rules_without_gpus(doc, where, svc, bad)
    _tensor_override_rules(where, svc, gpus, bad)


def _service_rules_without_gpus(doc, where, svc, bad) -> None:
    """The rules of one service that do not depend on its GPUs."""
    if svc["api_key_env"] and svc["api_key_file"]:
        bad(f"{where}.api_key_file", svc["api_key_file"], "null when api_key_env is set (one source per key)")
    args = [a for a in svc["extra_args"] if isinstance(a, str)]  # the schema refused the others
    if any(_api_key_flag(a) for a in args):
        bad(f"{where}.extra_args", Masked(_masked_args(svc["extra_args"])),
            "no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)")
    if any(_token_flag(a) for a in args):
        bad(f"{where}.extra_args", Masked(_masked_args(svc["extra_args"])),
            "no --hf-token (a token on the command line is readable by every local user, and llamarig downloads "
            "the model itself: use hub_token_env or hub_token_file)")
    fork = doc["build_fork"] if doc["build_fork"] in FORKS else "llama.cpp"
    for arg in args:
        flag = canonical(fork, arg.split("=", 1)[0]) if arg.startswith("-") else ""
        key = _OWNED.get(flag)
        if key:
            bad(f"{where}.extra_args", arg, f"no {arg.split('=', 1)[0]} in extra_args ({key}: a second one would be "
                                            f"the one llama-server uses, and the unit's checks would look at another)")
        if flag in _PLANNED:
            bad(f"{where}.extra_args", arg, f"no {arg.split('=', 1)[0]} in extra_args (use the key {_PLANNED[flag]}: "
                                            f"the plan's memory is for that key, and a second flag would be the one "
                                            f"llama-server runs)")
    if svc["placement"] == "auto":
        for key in ("n_gpu_layers", "tensor_split", "n_cpu_moe", "cpu_moe", "fit"):
            if svc[key] not in (None, False) and not (key == "fit" and svc[key] is False):
                bad(f"{where}.{key}", svc[key], "null with placement: auto (the planner sets the placement)")
        if svc["tensor_overrides"]:
            bad(f"{where}.tensor_overrides", svc["tensor_overrides"], "[] with placement: auto (the planner sets them)")
        if svc["split_mode"] not in (None, "layer"):
            bad(f"{where}.split_mode", svc["split_mode"], "null or layer with placement: auto (the planner splits by layer)")
        if svc["ctx_size"] is None:
            bad(f"{where}.ctx_size", None, "a context size with placement: auto (the KV cache is planned for it)")
        for arg in args:
            if arg.split("=", 1)[0] in PLACEMENT_FLAGS:
                bad(f"{where}.extra_args", arg, "no placement flag with placement: auto (the planner sets them)")
    if svc["rpc_workers"] and doc["build_fork"] != "llama.cpp":
        bad(f"{where}.rpc_workers", svc["rpc_workers"], "[] on an ik_llama.cpp rig (llamarig plans llama.cpp's RPC "
                                                        "devices only; build_fork: llama.cpp)")
    if doc["build_fork"] in FORKS:  # else refused by the schema: the fork is unknown
        for key, value, expected in fork_problems(doc["build_fork"], svc):
            bad(f"{where}.{key}", value, expected)


def _tensor_override_rules(where, svc, gpus, bad) -> None:
    for j, pair in enumerate(svc["tensor_overrides"]):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            continue  # refused by the schema
        pattern, device = pair
        try:
            re.compile(pattern)
        except re.error as exc:
            bad(f"{where}.tensor_overrides[{j}][0]", pattern, f"a regular expression that compiles ({exc})")
        if "=" in pattern or "," in pattern:
            bad(f"{where}.tensor_overrides[{j}][0]", pattern, "a pattern without '=' or ',' (llama-server splits on them)")
        if svc["rpc_workers"] and _RPC_DEVICE.fullmatch(device):
            continue  # a worker's device: rpc_links.py checks that the workers have it
        match = _DEVICE.fullmatch(device)
        devices = ["CPU"] + [f"CUDA{k}" for k in range(len(gpus))]
        if not match or (match.group(2) is not None and int(match.group(2)) >= len(gpus)):
            hint = messages.near(device, devices) if device.upper() in devices else ""  # llama-server compares exactly
            bad(f"{where}.tensor_overrides[{j}][1]", device, "a device of this service: " + ", ".join(devices) + hint)


def _masked_args(args: list) -> str:
    """extra_args as written, with the value of every --api-key and --hf-token replaced by ***."""
    out = []
    for j, arg in enumerate(args):
        if _secret_arg(args, j):
            flag = _flag_of(arg)
            out.append("***" if flag not in _SECRET_VALUE_FLAGS else f"{flag}=***" if "=" in arg else f"{flag} ***")
        else:
            out.append(repr(arg) if isinstance(arg, str) else "...")  # an item the schema refused (reported)
    return "[" + ", ".join(out) + "]"
