"""After every deploy, check each service live: healthy, running the declared context, answering.

The check only reads. It runs while pyinfra executes (never in --dry), yields no
command when the service is good, so a deploy that changed nothing still reports
no change, and fails the host with the unit's journal tail when it is not.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
from pyinfra import host, logger
from pyinfra.api import FactBase, deploy, operation
from pyinfra.operations import files

from llamarig import layout
from llamarig.unit import has_api_key

from .util import executing, fail_command

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class ServiceCheck(FactBase):
    """The verdict of llamarig-verify.py for one service (a dict)."""

    def command(self, script, unit, url, ctx, prompt, max_tokens, timeout, key_file=None):
        words = ["python3", script, "--unit", unit, "--url", url, "--prompt", prompt,
                 "--max-tokens", max_tokens, "--timeout", timeout]
        if key_file:
            words += ["--api-key-file", key_file]
        if ctx is not None:
            words += ["--ctx", ctx]
        return " ".join(shlex.quote(str(w)) for w in words)

    def process(self, output):
        text = "\n".join(output).strip()
        try:
            return json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            return {"ok": False, "error": f"the check printed no verdict: {text[-500:]}"}


def service_url(service: dict) -> str:
    bind = service["host"]
    address = "127.0.0.1" if bind in (None, "0.0.0.0", "127.0.0.1", "localhost") else bind
    if bind == "::":
        address = "[::1]"
    elif ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"http://{address}:{service['port']}"


@operation()
def service_answers(service: dict, script: str, prompt: str, max_tokens: int, timeout: int):
    """
    Check one service live; no command when it is healthy, a failing one (with the journal tail) when not.

    + service: the validated service
    + script: path of the installed llamarig-verify.py
    + prompt, max_tokens: the check completion
    + timeout: seconds to wait for /health
    """
    if not executing():
        return
    unit = layout.unit_name(service["name"])
    verdict = host.get_fact(ServiceCheck, script=script, unit=unit, url=service_url(service),
                            ctx=service["ctx_size"], prompt=prompt, max_tokens=max_tokens, timeout=timeout,
                            key_file=layout.api_key_file(service["name"]) if has_api_key(service) else None)
    if verdict.get("ok"):
        logger.info(f"{host.print_prefix}{click.style(unit, bold=True)} [live] healthy, n_ctx "
                    f"{verdict.get('live_n_ctx')} x {verdict.get('live_slots')} slot(s); answer: {verdict.get('answer')!r}")
        return
    journal = verdict.get("journal", "")
    yield fail_command(f"{unit}: {verdict.get('error')}\n--- journalctl -u {unit} (last lines)\n{journal}")


@deploy("Verify")
def apply(rig):
    doc = rig.doc
    script = layout.libexec(doc["build_root"], "llamarig-verify.py")
    files.directory(name="llamarig directories", path=str(Path(script).parent), present=True)
    files.put(name="Verify script", src=str(TEMPLATES / "llamarig-verify.py"), dest=script, mode="755")
    for svc in doc["services"]:
        service_answers(name=f"Verify {layout.unit_name(svc['name'])}", service=svc, script=script,
                        prompt=doc["verify_prompt"], max_tokens=doc["verify_max_tokens"],
                        timeout=doc["verify_timeout_s"])
