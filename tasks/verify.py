"""After every deploy, check each service live: healthy, running the declared context, answering.

The check only reads. It runs while pyinfra executes (never in --dry), yields no
command when the service is good and already recorded, so a deploy that changed
nothing still reports no change. A unit that answers is recorded as known good
(its text and URL, root-only under /var/lib/llamarig/known-good). A unit that
does not answer fails the host with its journal tail, and is rolled back: the
recorded unit, which names its own build and model revision, is put back,
restarted and checked, so yesterday's service keeps answering.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
from pyinfra import host, logger
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.operations import files

from llamarig import layout
from llamarig.release.unit import has_api_key

from .models import secret_file
from .util import executing, quote_all

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


def known_good(unit: str, text: str, url: str, key_file: str | None) -> dict:
    return {"unit": unit, "text": text, "url": url, "api_key_file": key_file}


@operation()
def service_answers(service: dict, unit_text: str, script: str, prompt: str, max_tokens: int, timeout: int):
    """
    Check one service live; record a unit that answers, roll back one that does not.

    + service: the validated service
    + unit_text: the unit installed for it (recorded as known good once it answers)
    + script: path of the installed llamarig-verify.py
    + prompt, max_tokens: the check completion
    + timeout: seconds to wait for /health

    A healthy service already recorded yields nothing. A failing one yields a command that
    prints the failure and the journal tail, puts back the last unit that answered (if any),
    restarts and checks it, and fails the host.
    """
    if not executing():
        return
    unit = layout.unit_name(service["name"])
    url = layout.service_url(service)
    key_file = layout.api_key_file(service["name"]) if has_api_key(service) else None
    verdict = host.get_fact(ServiceCheck, script=script, unit=unit, url=url, ctx=service["ctx_size"], prompt=prompt,
                            max_tokens=max_tokens, timeout=timeout, key_file=key_file)
    record = layout.known_good_record(unit)
    if verdict.get("ok"):
        logger.info(f"{host.print_prefix}{click.style(unit, bold=True)} [live] healthy, n_ctx "
                    f"{verdict.get('live_n_ctx')} x {verdict.get('live_slots')} slot(s); answer: {verdict.get('answer')!r}")
        # root-only like a secret: the unit names its API key's credential file
        yield from secret_file._inner(path=record, secret=json.dumps(known_good(unit, unit_text, url, key_file),
                                                                      indent=1, sort_keys=True) + "\n")
        return
    journal = verdict.get("journal", "")
    message = f"llamarig: {unit}: {verdict.get('error')}\n--- journalctl -u {unit} (last lines)\n{journal}"
    words = ["python3", script, "--rollback", record, "--unit", unit, "--url", url, "--prompt", prompt,
             "--max-tokens", max_tokens, "--timeout", timeout]
    yield StringCommand(f"echo {shlex.quote(message)} >&2; {quote_all(words)}; exit 1")


@deploy("Verify")
def apply(rig, units: dict[str, str]):
    doc = rig.doc
    script = layout.libexec(doc["build_root"], "llamarig-verify.py")
    files.directory(name="llamarig directories", path=str(Path(script).parent), present=True)
    files.put(name="Verify script", src=str(TEMPLATES / "llamarig-verify.py"), dest=script, mode="755")
    for svc in doc["services"]:
        unit = layout.unit_name(svc["name"])
        service_answers(name=f"Verify {unit}", service=svc, unit_text=units[unit], script=script,
                        prompt=doc["verify_prompt"], max_tokens=doc["verify_max_tokens"],
                        timeout=doc["verify_timeout_s"])
