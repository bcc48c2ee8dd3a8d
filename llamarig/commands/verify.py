"""``llamarig verify INVENTORY``: what each rig runs, checked on the rig, each fact graded by how it is known.

- ``[configured]``: what the host data declares (a statement, not a check);
- ``[live]``: seen on the rig now: the unit is active, ``/health`` answers 200,
  ``/props`` reports the declared context, model, alias, slots and sampling;
- ``[measured]``: ``systemd-analyze security``'s exposure number and, with
  ``--inference``, one completion's tokens/s and latency.

The rig is reached over SSH with its pyinfra connection data (``ssh_rig``, the
one function that touches the network, replaced in the unit tests). HTTP runs on
the rig itself (``python3 -c``), since the servers may bind loopback only. An
API key stays on the rig: the probe reads the root-only credential file the
deploy installed. Exit status: 0 when every live and measured check passed, 1
when one failed or the data is bad, 2 for usage errors.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from llamarig import layout
from llamarig.forks.options import canonical
from llamarig.hostdata.inventory import load_checked
from llamarig.lookups.rigssh import ssh_rig
from llamarig.release.unit import has_api_key
from llamarig.hostdata.validate import service_gpus

HTTP_TIMEOUT_S = 10


@dataclass
class Check:
    host: str
    service: str | None
    check: str
    grade: str  # configured | live | measured
    ok: bool | None  # None: a [configured] statement, not a check
    value: Any
    expected: Any = None
    detail: str = field(default="", repr=False)  # the text line's wording; not in --json

    def to_json(self) -> dict:
        out = asdict(self)
        del out["detail"]
        return out

    def line(self) -> str:
        status = {True: "ok ", False: "FAILED ", None: ""}[self.ok]
        text = self.detail or _show(self.value)
        if self.ok is False and self.expected is not None:
            text += f" (expected {_show(self.expected)})"
        return f"{self.host} {self.service or '-'} [{self.grade}] {status}{self.check}: {text}"


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- what runs on the rig ---------------------------------------------------------------------

# One HTTP request made on the rig; prints {"status", "body", "seconds"} or {"error", "seconds"}.
# The API key is read there from the credential file and never printed, not even in an error.
PROBE = """\
import json, sys, time, urllib.error, urllib.request
url, body, key_file, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
out, key, start = {}, "", time.monotonic()
try:
    headers = {"Content-Type": "application/json"} if body else {}
    if key_file:
        with open(key_file) as f:
            key = f.readline().strip()
        headers["Authorization"] = "Bearer " + key
    request = urllib.request.Request(url, data=body.encode() if body else None, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            out["status"], text = r.status, r.read()
    except urllib.error.HTTPError as e:
        out["status"], text = e.code, e.read()
    out["body"] = text.decode("utf-8", "replace")
except Exception as e:
    message = type(e).__name__ + ": " + str(e)
    out["error"] = type(e).__name__ if key and (key in message or "Bearer" in message) else message
out["seconds"] = round(time.monotonic() - start, 4)
print(json.dumps(out))
"""


def api_key_file_on_rig(service: dict) -> str | None:
    """The rig file holding the service's API key, which every request must send; None without a key."""
    return layout.api_key_file(service["name"]) if has_api_key(service) else None


def http(run, service: dict, path: str, body: dict | None = None, timeout: float = HTTP_TIMEOUT_S) -> dict:
    words = ["python3", "-c", PROBE, layout.service_url(service) + path, json.dumps(body) if body else "",
             api_key_file_on_rig(service) or "", timeout]
    status, out, err = run(" ".join(shlex.quote(str(w)) for w in words), timeout + 15)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"the probe failed on the rig (exit {status}): {(err or out).strip()[-300:]}"}


def ctx_matches(live_n_ctx, declared: int, slots: int) -> bool:
    """The deploy's rule (templates/llamarig-verify.py): /props reports one slot's context, the whole
    context when the KV cache is unified (llama.cpp: llama_n_ctx_seq), else its share per slot."""
    return live_n_ctx in (declared, declared // max(slots, 1))


_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
_PROPS_SAMPLING = {"temp": "temperature"}  # llama-server's name where it differs from the data's


# --- the checks -------------------------------------------------------------------------------

def configured(host: str, doc: dict, svc: dict) -> list[Check]:
    name = svc["name"]
    gpus = service_gpus(doc, svc)
    models = sorted({doc["gpus"][i]["model"] for i in gpus if i < len(doc["gpus"])})
    return [
        Check(host, name, "port", "configured", None, svc["port"],
              detail=f"{svc['port']} (bind {svc['host'] or '127.0.0.1, the default'})"),
        Check(host, name, "ctx_size", "configured", None, svc["ctx_size"],
              detail=str(svc["ctx_size"]) if svc["ctx_size"] else "not declared (the server's default)"),
        Check(host, name, "gpus", "configured", None, gpus,
              detail=(",".join(map(str, gpus)) + f" ({', '.join(models)})") if gpus else "none (CPU only)"),
    ]


def _overridden(doc: dict, svc: dict, flag: str) -> bool:
    """extra_args come last and win: a setting they repeat is not the declared one."""
    return any(canonical(doc["build_fork"], a.split("=", 1)[0]) == flag for a in svc["extra_args"])


def props_checks(host: str, doc: dict, svc: dict, props: dict) -> list[Check]:
    name = svc["name"]
    settings = props.get("default_generation_settings") or {}
    n_ctx = settings.get("n_ctx", props.get("n_ctx"))
    slots = props.get("total_slots") or 1
    out = []
    if svc["ctx_size"] is not None:
        out.append(Check(host, name, "n_ctx", "live", ctx_matches(n_ctx, svc["ctx_size"], slots), n_ctx,
                         svc["ctx_size"], detail=f"{n_ctx} per slot, {slots} slot(s)"))
    else:
        out.append(Check(host, name, "n_ctx", "live", n_ctx is not None, n_ctx, detail=f"{n_ctx} per slot, {slots} slot(s)"))

    model = doc["models"][svc["model"]]
    path = props.get("model_path")
    # Offline, a branch or tag is not resolved and an unset file is resolved on the Hub at deploy:
    # what is known is the model's folder, its revision directory when pinned, and the file when declared.
    pinned = layout.revision_label(model["revision"]) != model["revision"]
    folder = (layout.model_revision_dir(doc["models_dir"], svc["model"], model["revision"]) if pinned
              else layout.model_dir(doc["models_dir"], svc["model"]) + "/*") + "/"
    expected = folder + (model["file"] or "*")
    out.append(Check(host, name, "model_path", "live", isinstance(path, str) and fnmatch.fnmatchcase(path, expected),
                     path, expected))
    if svc["alias"] and not _overridden(doc, svc, "--alias") and "model_alias" in props:
        out.append(Check(host, name, "alias", "live", props["model_alias"] == svc["alias"], props["model_alias"], svc["alias"]))
    if svc["parallel"] and not _overridden(doc, svc, "--parallel") and "total_slots" in props:
        out.append(Check(host, name, "slots", "live", props["total_slots"] == svc["parallel"],
                         props["total_slots"], svc["parallel"]))
    params = settings.get("params") or settings  # llama.cpp nests them under params, ik_llama.cpp does not
    for key, declared in svc["sampling"].items():
        live = params.get(_PROPS_SAMPLING.get(key, key))
        flag = "--" + key.replace("_", "-")
        if declared is None or not isinstance(live, (int, float)) or _overridden(doc, svc, flag):
            continue
        ok = abs(live - declared) <= 1e-4 * max(1.0, abs(declared))  # the server holds floats
        out.append(Check(host, name, f"sampling.{key}", "live", ok, live, declared))
    return out


def inference_check(host: str, doc: dict, svc: dict, run) -> Check:
    body = {"messages": [{"role": "user", "content": doc["verify_prompt"]}],
            "max_tokens": doc["verify_max_tokens"], "temperature": 0}
    got = http(run, svc, "/v1/chat/completions", body, timeout=max(60, doc["verify_timeout_s"]))
    fail = lambda why: Check(host, svc["name"], "completion", "measured", False, why)  # noqa: E731
    if "error" in got or got.get("status") != 200:
        return fail(got.get("error") or f"HTTP {got.get('status')}: {got.get('body', '')[:200]}")
    try:
        answer = json.loads(got["body"])
        text = (answer["choices"][0]["message"].get("content") or "").strip()
        tokens = answer.get("usage", {}).get("completion_tokens") or 0
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return fail(f"not a chat completion: {got['body'][:200]}")
    if not tokens:
        return fail("the completion produced no tokens")
    timings = answer.get("timings") or {}
    rate = timings.get("predicted_per_second") or tokens / max(got["seconds"], 1e-6)
    value = {"completion_tokens": tokens, "latency_s": got["seconds"], "tokens_per_s": round(rate, 2), "answer": text}
    return Check(host, svc["name"], "completion", "measured", True, value,
                 detail=f"{tokens} token(s) in {got['seconds']:.2f} s, {rate:.1f} tokens/s generating: {text[:60]!r}")


def service_checks(host: str, doc: dict, svc: dict, run, inference: bool) -> list[Check]:
    name, unit = svc["name"], layout.unit_name(svc["name"])
    out = []
    _, state, err = run(f"systemctl is-active {shlex.quote(unit)}", 30)
    state = state.strip() or err.strip() or "no answer"
    out.append(Check(host, name, "unit", "live", state == "active", state, "active", detail=f"{unit} {state}"))

    health = http(run, svc, "/health")
    status = health.get("status")
    out.append(Check(host, name, "health", "live", status == 200, status or health.get("error"), 200,
                     detail=f"/health answered {status}" if status else f"/health: {health.get('error')}"))

    props = http(run, svc, "/props")
    try:
        if props.get("status") != 200:
            raise ValueError(props.get("error") or f"HTTP {props.get('status')}")
        out += props_checks(host, doc, svc, json.loads(props["body"]))
    except (ValueError, TypeError, AttributeError) as exc:
        out.append(Check(host, name, "props", "live", False, f"/props: {exc}"))

    _, text, err = run(f"systemd-analyze security --no-pager {shlex.quote(unit)}", 60)
    match = _EXPOSURE.search(text)
    out.append(Check(host, name, "exposure", "measured", bool(match), float(match.group(1)) if match else
                     f"no exposure level in systemd-analyze's output: {(err or text).strip()[-200:]}"))
    if inference:
        out.append(inference_check(host, doc, svc, run))
    return out


def host_checks(host: str, doc: dict, data: dict, inference: bool) -> list[Check]:
    out = [c for svc in doc["services"] for c in configured(host, doc, svc)]
    if not doc["services"]:
        return out + [Check(host, None, "services", "configured", None, [], detail="none declared")]
    target = f"{data.get('ssh_user') or ''}{'@' if data.get('ssh_user') else ''}" \
             f"{data.get('ssh_hostname') or host}:{data.get('ssh_port') or 22}"
    with ExitStack() as stack:
        try:
            run = stack.enter_context(ssh_rig(host, data))
        except Exception as exc:  # noqa: BLE001 - any failure to reach the rig is that rig's failed line
            return out + [Check(host, None, "ssh", "live", False,
                                f"{host} unreachable at {target}: {type(exc).__name__}: {exc}")]
        for svc in doc["services"]:
            out += service_checks(host, doc, svc, run, inference)
    return out


def cmd_verify(args) -> int:
    if not os.path.isfile(args.inventory):
        print(f"llamarig verify: {args.inventory}: no such inventory file", file=sys.stderr)
        return 2
    loaded = load_checked(args.inventory)
    if loaded is None:
        return 1
    entries, docs = loaded
    hosts = args.host or list(docs)
    unknown = [h for h in hosts if h not in docs]
    if unknown:
        print(f"llamarig verify: no host {unknown[0]} in {args.inventory} (hosts: {', '.join(docs)})", file=sys.stderr)
        return 2
    data = {e.name: e.data for e in entries}
    checks = []
    for host in hosts:
        found = host_checks(host, docs[host], data[host], args.inference)
        if not args.json:
            print("\n".join(c.line() for c in found), flush=True)
        checks += found
    if args.json:
        print(json.dumps([c.to_json() for c in checks], indent=1))
    return 1 if any(c.ok is False for c in checks) else 0
