"""``llamarig verify INVENTORY``: what each rig runs, checked on the rig, each fact graded by how it is known.

- ``[configured]``: what the host data declares (a statement, not a check);
- ``[live]``: seen on the rig now: the unit is active, ``/health`` answers 200,
  ``/props`` reports the declared context, model, alias, slots and sampling;
- ``[measured]``: ``systemd-analyze security``'s exposure number and, with
  ``--inference``, one completion's tokens/s and latency.

What each service must show is its release's expectation (``llamarig.release.expect``,
through the same resolver as the deploy), checked on the rig by the deploy's own
checker, ``rig_programs/llamarig-check.py``, sent inline (``python3 -c``): the servers
may bind loopback only. The rig is reached over SSH with its pyinfra connection data
(``ssh_rig``, replaced in the unit tests). An API key stays on the rig: the checker
reads the root-only credential file the deploy installed. Exit status: 0 when every live and measured check passed, 1
when one failed or the data is bad, 2 for usage errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from llamarig import programs
from llamarig.commands.releases import ReleaseError, read_locks, release_of
from llamarig.hostdata.inventory import load_checked
from llamarig.hostdata.validate import service_gpus
from llamarig.lookups.gitref import GitRefError
from llamarig.lookups.rigssh import ssh_rig
from llamarig.release.resolve import Lookups, real_lookups


def lookups() -> Lookups:
    """The resolver's lookups for verify: the Hub (an unpinned revision names a directory), no git (the
    commit decides no check)."""
    def no_git(url: str, ref: str) -> str:
        raise GitRefError("not looked up by verify")
    return dataclasses.replace(real_lookups(), git_ref=no_git)



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


def checker_command(expect: dict, inference: bool) -> str:
    """The rig's checker (rig_programs/llamarig-check.py), sent inline, with the service's expectation."""
    words = ["python3", "-c", programs.source(programs.CHECK), "--expect-json", json.dumps(expect, sort_keys=True),
             "--exposure"]
    if inference:
        words.append("--inference")
    return " ".join(shlex.quote(str(w)) for w in words)


def service_checks(host: str, svc: dict, expect: dict, run, inference: bool) -> list[Check]:
    """The checker's verdict on one service, as graded lines."""
    timeout = max(60, expect["timeout_s"]) + 60 if inference else 120
    status, out, err = run(checker_command(expect, inference), timeout)
    try:
        verdict = json.loads(out.strip().splitlines()[-1])
        found = verdict["checks"]
    except (ValueError, IndexError, KeyError, TypeError):
        why = (err or out).strip()[-300:]
        return [Check(host, svc["name"], "check", "live", False, f"the checker failed on the rig (exit {status}): {why}")]
    return [Check(host, svc["name"], c["check"], c.get("grade", "live"), c.get("ok"), c.get("value"),
                  c.get("expected"), detail=c.get("detail") or "") for c in found]


def host_checks(host: str, doc: dict, data: dict, inference: bool, expects: dict[str, dict]) -> list[Check]:
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
            out += service_checks(host, svc, expects[svc["name"]], run, inference)
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
    try:
        locks = read_locks(args.inventory)
    except ReleaseError as exc:
        print(f"llamarig verify: {exc}", file=sys.stderr)
        return 1
    for host in hosts:
        try:
            shown = release_of(host, docs[host], locks, lookups())
        except ReleaseError as exc:
            print(f"llamarig verify: {exc}", file=sys.stderr)
            return 1
        expects = {u.service: u.expect for u in shown.release.units.values()}
        found = host_checks(host, docs[host], data[host], args.inference, expects)
        if not args.json:
            print("\n".join(c.line() for c in found), flush=True)
        checks += found
    if args.json:
        print(json.dumps([c.to_json() for c in checks], indent=1))
    return 1 if any(c.ok is False for c in checks) else 0
