"""After every deploy, check each service live with the rig's checker; record what answers, roll back what does not.

The check only reads. It runs while pyinfra executes (never in --dry) and yields no
command when the service is good and already recorded, so a deploy that changed
nothing still reports no change. The checker (``rig_programs/llamarig-check.py``,
the same one ``llamarig verify`` sends) reads the expectation the deploy wrote
beside the unit: healthy, the declared context, model file, alias, slots and
sampling, and one completion with tokens. A unit that answers is recorded as
known good (its text and expectation, root-only under /var/lib/llamarig/known-good).
A unit that does not answer fails the host with its journal tail, and is rolled
back: the recorded unit, which names its own build and model revision, is put
back, restarted and checked, so yesterday's service keeps answering.
"""

from __future__ import annotations

import json
import os
import shlex

import click
from pyinfra import host, logger
from pyinfra.api import FactBase, StringCommand, deploy, operation

from llamarig import layout, programs
from llamarig.release.expect import answer_text

from . import report, rig_programs
from .root_files import secret_file

from .util import LiveCommand, executing, progress_env, quote_all


FULL_CHECK_ENV = "LLAMARIG_FULL_CHECK"


class ServiceCheck(FactBase):
    """The verdict of llamarig-check.py for one service (a dict), waiting for it to start. With ``record``
    (the known-good record of the unit), a service that answered a completion as it runs now, and has not
    started since, is checked on /health and /props only."""

    def command(self, script, expect_file, record=None):
        words = ["python3", script, "--expect", expect_file, "--wait", "--inference", "--journal"]
        return quote_all(words + (["--record", record] if record else []))

    @staticmethod
    def default():
        return {"ok": False, "error": "the check printed nothing (is python3 on the rig?)"}

    def process(self, output):
        text = "\n".join(output).strip()
        try:
            return json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            return {"ok": False, "error": f"the check printed no verdict: {text[-500:]}"}


def known_good(unit: str, text: str, expect: dict) -> str:
    """The record a rollback restores: the unit's text, and what its check must find."""
    return json.dumps({"unit": unit, "text": text, "expect": expect}, indent=1, sort_keys=True) + "\n"


@operation()
def service_answers(unit: str, unit_text: str, expect: dict, script: str):
    """
    Check one service live; record a unit that answers, roll back one that does not.

    + unit: the unit's file name
    + unit_text: the unit installed for it (recorded as known good once it answers)
    + expect: what its check must find (the release's expectation, installed at ``layout.expectation_file``)
    + script: path of the installed llamarig-check.py

    A healthy service already recorded yields nothing. A failing one yields a command that
    prints the failure and the journal tail, puts back the last unit that answered (if any),
    restarts and checks it, and fails the host.

    **Example:**

    .. code:: python

        service_answers(name="Verify", unit="llamarig-glm.service", unit_text=u.text, expect=u.expect,
                        script="/opt/llamarig/libexec/llamarig-check.py")
    """
    if not executing():
        host.noop(f"{unit} is checked live while the deploy executes")
        return
    record = layout.known_good_record(unit)
    quick = None if os.environ.get(FULL_CHECK_ENV) else record
    verdict = host.get_fact(ServiceCheck, script=script, expect_file=layout.expectation_file(unit), record=quick)
    report.record_verdict(unit, verdict)
    if verdict.get("ok"):
        said = (f"answered before ({verdict['answered_before']})" if verdict.get("answered_before")
                else f"answers: {answer_text(verdict.get('answer'))!r}")
        logger.info(f"{host.print_prefix}{click.style(unit, bold=True)} [live] healthy, n_ctx "
                    f"{verdict.get('live_n_ctx')} x {verdict.get('live_slots')} slot(s); {said}")
        # root-only like a secret: the unit names its API key's credential file
        yield from secret_file._inner(path=record, secret=known_good(unit, unit_text, expect))
        return
    message = (f"llamarig: {unit}: {verdict.get('error') or 'the check failed'}\n--- journalctl -u {unit} (last lines)\n"
               f"{verdict.get('journal', '')}")
    words = ["python3", script, "--rollback", record, "--unit-dir", layout.UNIT_DIR]
    yield StringCommand(f"echo {shlex.quote(message)} >&2; {quote_all(words)}; exit 1")


@operation()
def service_ready(unit: str, expect_file: str, script: str):
    """
    Wait for a just restarted service to answer /health, saying every few seconds what it waits for
    (a 100 GB model takes minutes to load). Yields only while executing; the verdict is service_answers'.

    + unit: the unit's file name
    + expect_file: its check's expectation on the rig
    + script: path of the installed llamarig-check.py

    **Example:**

    .. code:: python

        service_ready(name="Wait", unit="llamarig-glm.service", expect_file="/etc/llamarig/expect/...",
                      script="/opt/llamarig/libexec/llamarig-check.py", _if=restart.did_change)
    """
    if not executing():
        host.noop(f"{unit} is waited for while the deploy executes")
        return
    yield LiveCommand(progress_env() + quote_all(["python3", script, "--expect", expect_file, "--wait-ready"]))


@deploy("Verify")
def apply(deployment, units, restarted=None):
    script = rig_programs.install(deployment.doc, programs.CHECK)
    for name, u in units.items():
        if restarted and name in restarted:
            service_ready(name=f"Wait for {name} to load", unit=name, expect_file=layout.expectation_file(name),
                          script=script, _if=restarted[name])
            report.unit_exposure(name=f"Exposure of {name} (for the report)", unit=name, _if=restarted[name])
        service_answers(name=f"Verify {name}", unit=name, unit_text=u.text, expect=u.expect, script=script)
