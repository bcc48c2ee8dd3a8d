#!/usr/bin/env python3
"""Check one llama-server service on this rig and print the verdict as one line of JSON (llamarig).

One checker serves both the deploy's live check and ``llamarig verify``; it runs
installed or inline (``python3 -c "$SOURCE" ARGS...``), with the Python standard
library only. What it must find comes from the controller as a JSON object
(``--expect FILE`` or ``--expect-json JSON``)::

    {"unit", "url", "api_key_file", "timeout_s", "prompt", "max_tokens",
     "props": {"n_ctx", "model_path", "model_path_match", "alias", "total_slots", "sampling"}}

Checks, in order: ``unit`` (systemd's state), ``health`` (/health answers 200),
``n_ctx``, ``model_path``, ``alias``, ``slots`` and ``sampling.KEY`` (/props),
then with ``--inference`` one chat ``completion`` and with ``--exposure``
``systemd-analyze security``'s exposure level. With ``--wait`` (the deploy's
mode) it first waits for the unit to be active and /health to answer 200 (503
while the model loads), fails at once when the server exits while starting, and
stops at the first failed check; without it, it looks once and runs every check
that still makes sense. With ``--journal`` a failed verdict carries the unit's
journal tail. With ``--record FILE`` (the known-good record of the unit) a
service whose unit and expectation are the ones that answered, and which has
not started since the record was written, is not asked for a completion again
(``answered_before`` in the verdict says when it last answered). With
``--wait-ready`` it only waits for the unit and /health, printing every
LLAMARIG_PROGRESS_S seconds (10) what it waits for, then one line. The API key,
when the service has one, is read here from its root-only file and never
printed. Always exits 0: the verdict is in the JSON.

With ``--rollback RECORD --unit-dir DIR`` (run by the deploy after a failed
check) it instead puts back the last unit that answered (RECORD: ``{"unit",
"text", "expect"}``), restarts it, checks that it answers, says on stderr what it
did, and exits 1: the deploy failed even when the old service is back.
"""

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HTTP_TIMEOUT_S = 10
UNIT_DIR = os.environ.get("LLAMARIG_UNIT_DIR", "/etc/systemd/system")  # overridden by the program's tests


def progress_every():
    try:
        return max(1, int(os.environ.get("LLAMARIG_PROGRESS_S", "10")))
    except ValueError:
        return 10
START_GRACE_S = 5  # "failed" or "inactive" this long after the wait began: it is not coming up
JOURNAL_LINES = 40
JOURNAL_CHARS = 6000
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
PROPS_SAMPLING = {"temp": "temperature"}  # llama-server's /props name where it differs from the data's
DEFAULTS = {"api_key_file": None, "timeout_s": 600, "prompt": "Reply with one short friendly sentence.",
            "max_tokens": 16, "props": {}}


class Stop(Exception):
    """A check failed in --wait mode: no further check is run."""


class Checker:
    def __init__(self, expect, wait=False, inference=False, exposure=False, record=None, progress=False):
        self.expect = dict(DEFAULTS, **expect)
        self.unit = self.expect["unit"]
        self.url = self.expect["url"].rstrip("/")
        self.wait, self.inference, self.exposure = wait, inference, exposure
        self.record, self.progress = record, progress
        self.key = ""
        self.checks = []
        self.extra = {"live_n_ctx": None, "live_slots": None, "answer": None, "completion_tokens": None}
        self.expect_given = expect

    # --- plumbing -----------------------------------------------------------------------------

    def describe(self, exc):
        """An exception as text, reduced to its type's name when the text could carry the API key."""
        message = f"{type(exc).__name__}: {exc}"
        if self.key and (self.key in message or "Bearer" in message):
            return type(exc).__name__
        return message

    def scrub(self, text):
        """Any text from outside (a server's error body) with the API key, should it echo it, blanked."""
        return text.replace(self.key, "***") if self.key and isinstance(text, str) else text

    def request(self, path, body=None, timeout=HTTP_TIMEOUT_S):
        """(status, body bytes) of one request; an HTTP error status is an answer, not an exception."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.key:
            headers["Authorization"] = "Bearer " + self.key
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, exc.read()
            finally:
                exc.close()

    def add(self, check, grade, ok, value=None, expected=None, detail=""):
        self.checks.append({"check": check, "grade": grade, "ok": bool(ok), "value": value,
                            "expected": expected, "detail": self.scrub(detail)})
        if not ok and self.wait:
            raise Stop

    def unit_state(self):
        """systemd's ActiveState, or "auto-restart" when the server exited and systemd waits to start it again."""
        try:
            out = subprocess.run(["systemctl", "show", "-p", "ActiveState", "-p", "SubState", "--value", self.unit],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"unknown ({type(exc).__name__})"
        words = out.stdout.split()
        if "auto-restart" in words:
            return "auto-restart"
        return words[0] if words else "unknown"

    def health(self, timeout=HTTP_TIMEOUT_S):
        """(status or None, detail) of one GET /health."""
        try:
            status, _ = self.request("/health", timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - refused, reset, timed out: not healthy yet
            return None, f"/health: {self.describe(exc)}"
        return status, f"/health answered {status}"

    # --- the checks ---------------------------------------------------------------------------

    def unit_check(self, state, detail=None):
        self.add("unit", "live", state == "active", state, "active", detail or f"{self.unit} is {state}")

    def ready(self):
        """unit and health: one look, or with --wait until both are good (or cannot become so)."""
        if not self.wait:
            state = self.unit_state()
            detail = (f"{self.unit} exited and systemd is waiting to restart it" if state == "auto-restart"
                      else None)
            self.unit_check(state, detail)
            status, detail = self.health()
            self.add("health", "live", status == 200, status if status is not None else detail, 200, detail)
            return status == 200
        timeout = self.expect["timeout_s"]
        start = time.monotonic()
        deadline = start + timeout
        last = "no answer"
        every = progress_every()
        said = start
        while True:  # in --wait mode a failed check raises Stop: each failing branch ends the wait
            if self.progress and time.monotonic() - said >= every:
                said = time.monotonic()
                print(f"waiting for {self.unit} to answer /health at {self.url}: {last} "
                      f"({int(said - start)} s of {timeout} s)", flush=True)
            state = self.unit_state()
            if state == "auto-restart":
                self.unit_check(state, f"{self.unit} exited while starting (systemd is waiting to restart it)")
            if state in ("failed", "inactive") and time.monotonic() - start > START_GRACE_S:
                self.unit_check(state)
            status = None
            if state == "active":
                status, last = self.health(timeout=max(1.0, min(HTTP_TIMEOUT_S, deadline - time.monotonic())))
                if status == 200:
                    self.unit_check(state)
                    self.add("health", "live", True, 200, 200, last)
                    return True
            else:
                last = f"{self.unit} is {state}"
            if time.monotonic() > deadline:
                why = f"{self.unit} did not become healthy in {timeout} s (last: {last})"
                if state != "active":
                    self.unit_check(state, why)
                else:
                    self.unit_check(state)
                    self.add("health", "live", False, status if status is not None else last, 200, why)
            time.sleep(1)

    def props_checks(self):
        want = self.expect["props"] or {}
        try:
            status, body = self.request("/props")
            if status != 200:
                raise ValueError(f"HTTP {status}")
            props = json.loads(body)
            if not isinstance(props, dict):
                raise ValueError("not a JSON object")
        except Exception as exc:  # noqa: BLE001 - reported as the failed check
            detail = f"/props: {self.describe(exc) if not isinstance(exc, ValueError) else exc}"
            self.add("props", "live", False, detail, None, detail)
            return
        settings = props.get("default_generation_settings")
        settings = settings if isinstance(settings, dict) else {}
        n_ctx = settings.get("n_ctx", props.get("n_ctx"))
        slots = props.get("total_slots") or 1
        self.extra["live_n_ctx"], self.extra["live_slots"] = n_ctx, slots

        if "n_ctx" in want:
            declared = want["n_ctx"]
            # /props reports one slot's context: the whole context when the KV cache is unified
            # (llama.cpp: llama_n_ctx_seq), else its share per slot.
            ok = isinstance(slots, int) and n_ctx in (declared, declared // max(slots, 1))
            self.add("n_ctx", "live", ok, n_ctx, declared,
                     f"{n_ctx} per slot, {slots} slot(s)" if ok else
                     f"declared ctx_size {declared}, but the server runs with n_ctx {n_ctx} per slot "
                     f"({slots} slot(s)): it was changed at start-up")
        if "model_path" in want:
            path, expected = props.get("model_path"), want["model_path"]
            if want.get("model_path_match") == "fnmatch":
                ok = isinstance(path, str) and fnmatch.fnmatchcase(path, expected)
            else:
                ok = path == expected
            self.add("model_path", "live", ok, path, expected,
                     f"serves {path}" if ok else f"the server serves {path}, expected {expected}")
        if "alias" in want and "model_alias" in props:
            live, declared = props["model_alias"], want["alias"]
            self.add("alias", "live", live == declared, live, declared,
                     str(live) if live == declared else f"the server's alias is {live}, declared {declared}")
        if "total_slots" in want and "total_slots" in props:
            live, declared = props["total_slots"], want["total_slots"]
            self.add("slots", "live", live == declared, live, declared,
                     f"{live} slot(s)" if live == declared else f"the server has {live} slot(s), declared {declared}")
        params = settings.get("params")
        params = params if isinstance(params, dict) else settings  # llama.cpp nests them, ik_llama.cpp does not
        for key, declared in sorted((want.get("sampling") or {}).items()):
            name = PROPS_SAMPLING.get(key, key)
            live = params.get(name)
            if (declared is None or isinstance(live, bool) or not isinstance(live, (int, float))
                    or isinstance(declared, bool) or not isinstance(declared, (int, float))):
                continue
            ok = abs(live - declared) <= 1e-4 * max(1.0, abs(declared))  # the server holds floats
            self.add(f"sampling.{key}", "live", ok, live, declared,
                     f"{name} {live}" if ok else f"the server's {name} is {live}, declared {declared}")

    def completion_check(self):
        body = {"messages": [{"role": "user", "content": self.expect["prompt"]}],
                "max_tokens": self.expect["max_tokens"], "temperature": 0}

        def fail(why):
            self.add("completion", "measured", False, None, None, why)

        start = time.monotonic()
        try:
            status, raw = self.request("/v1/chat/completions", body, timeout=max(60, self.expect["timeout_s"]))
        except Exception as exc:  # noqa: BLE001 - reported as the failed check
            return fail(f"chat completion failed: {self.describe(exc)}")
        latency = round(time.monotonic() - start, 4)
        text = raw.decode("utf-8", "replace")
        if status != 200:
            return fail(f"chat completion failed: HTTP {status}: {text[:200]}")
        try:
            answer = json.loads(text)
            message = answer["choices"][0]["message"]
            said = (message.get("content") or message.get("reasoning_content") or "").strip()
            usage = answer.get("usage") or {}
            tokens = usage.get("completion_tokens") or 0
            timings = answer.get("timings") or {}
            rate = timings.get("predicted_per_second")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return fail(f"not a chat completion: {text[:200]}")
        if not isinstance(tokens, (int, float)) or not tokens:
            return fail("the completion produced no tokens")
        if not isinstance(rate, (int, float)) or not rate:
            rate = tokens / max(latency, 1e-6)
        self.extra["answer"], self.extra["completion_tokens"] = said, tokens
        value = {"completion_tokens": tokens, "latency_s": latency, "tokens_per_s": round(rate, 2), "answer": said}
        self.add("completion", "measured", True, value, None,
                 f"{tokens} token(s) in {latency:.2f} s, {rate:.1f} tokens/s generating: {said[:60]!r}")

    def exposure_check(self):
        try:
            out = subprocess.run(["systemd-analyze", "security", "--no-pager", self.unit],
                                 capture_output=True, text=True, timeout=60)
            text, err = out.stdout, out.stderr
        except (OSError, subprocess.SubprocessError) as exc:
            text, err = "", f"{type(exc).__name__}: {exc}"
        match = EXPOSURE.search(text)
        if match:
            self.add("exposure", "measured", True, float(match.group(1)), None, f"exposure level {match.group(1)}")
        else:
            why = f"no exposure level in systemd-analyze's output: {(err or text).strip()[-200:]}"
            self.add("exposure", "measured", False, why, None, why)

    def run(self):
        try:
            key_file = self.expect["api_key_file"]
            if key_file:
                with open(key_file) as handle:
                    self.key = handle.readline().rstrip("\n")
            healthy = self.ready()
            if healthy:
                self.props_checks()
                answered = self.answered_before()
                if self.inference and not answered:
                    self.completion_check()
                elif self.inference:
                    self.extra["answered_before"] = answered
            if self.exposure:
                self.exposure_check()
        except Stop:
            pass
        except Exception as exc:  # noqa: BLE001 - the verdict must always come back as JSON
            self.checks.append({"check": "checker", "grade": "live", "ok": False, "value": None, "expected": None,
                                "detail": f"the check itself failed: {self.describe(exc)}"})
        return self.verdict()

    def answered_before(self):
        """Why a completion need not be asked again (None when it must): the record of the last unit that
        answered (``--record``) is this unit's text and expectation, and the service has not started since."""
        if not self.record:
            return None
        try:
            with open(self.record) as handle:
                record = json.load(handle)
            with open(os.path.join(UNIT_DIR, self.unit)) as handle:
                text = handle.read()
            recorded_at = os.stat(self.record).st_mtime
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("text") != text or record.get("expect") != self.expect_given:
            return None
        try:
            out = subprocess.run(["systemctl", "show", "-p", "ActiveEnterTimestamp", "--timestamp=unix", self.unit],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
            started = float(out.split("=", 1)[1].lstrip("@"))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None
        if started >= recorded_at:
            return None
        return (f"answered a completion at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(recorded_at))}, "
                f"unit and service unchanged since")

    def verdict(self):
        failed = [c for c in self.checks if not c["ok"]]
        result = {"unit": self.unit, "ok": bool(self.checks) and not failed}
        if not result["ok"]:
            result["error"] = failed[0]["detail"] if failed else "no check was run"
        result["checks"] = self.checks
        result.update(self.extra)
        return result


def journal(unit):
    try:
        out = subprocess.run(["journalctl", "-u", unit, "-n", str(JOURNAL_LINES), "--no-pager", "-o", "cat"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout[-JOURNAL_CHARS:]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(no journal: {type(exc).__name__}: {exc})"


def failed_verdict(unit, why):
    """The verdict when no check could even start (a bad expectation)."""
    return {"unit": unit, "ok": False, "error": why,
            "checks": [{"check": "checker", "grade": "live", "ok": False, "value": None, "expected": None,
                        "detail": why}],
            "live_n_ctx": None, "live_slots": None, "answer": None, "completion_tokens": None}


def check(expect, wait=False, inference=False, exposure=False, with_journal=False, record=None, progress=False):
    """The verdict (a dict) on the service ``expect`` describes; never raises."""
    try:
        checker = Checker(expect, wait=wait, inference=inference, exposure=exposure, record=record,
                          progress=progress)
    except Exception as exc:  # noqa: BLE001 - a bad expectation is a failed verdict too
        unit = expect.get("unit") if isinstance(expect, dict) else None
        return failed_verdict(unit, f"bad expectation: {type(exc).__name__}: {exc}")
    result = checker.run()
    if not result["ok"] and with_journal:
        result["journal"] = journal(checker.unit)
    if checker.key:  # last line of defence: the key is never part of the verdict, however it got there
        text = json.dumps(result)
        escaped = json.dumps(checker.key)[1:-1]
        if escaped in text:
            result = json.loads(text.replace(escaped, "***"))
    return result


def say(text):
    print("llamarig: " + text, file=sys.stderr, flush=True)


def write_atomically(directory, name, text):
    """``directory/name`` replaced by ``text`` in one rename: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".llamarig-rollback")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def systemctl(*words):
    try:
        subprocess.run(["systemctl", *words], check=False, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        say(f"systemctl {' '.join(words)}: {type(exc).__name__}: {exc}")


def rollback(record_file, unit_dir):
    """Put back the last unit that answered, restart it and check it; always 1."""
    unit = os.path.basename(record_file)
    unit = unit[:-len(".json")] if unit.endswith(".json") else unit
    try:
        with open(record_file) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        say(f"no earlier {unit} has answered a check: nothing to roll back to, it is left as it is")
        return 1
    except (OSError, ValueError) as exc:
        say(f"{record_file}: cannot read the record of the last {unit} that answered "
            f"({type(exc).__name__}: {exc}): it is left as it is")
        return 1
    if isinstance(record, dict) and "expect" not in record and "url" in record:
        # a record of the release before expectations: its unit and URL (DEFAULTS give the rest): only health
        # and a completion are checked
        record["expect"] = {"unit": record.get("unit"), "url": record["url"], "api_key_file": record.get("api_key_file")}
    try:
        unit, text, expect = record["unit"], record["text"], record["expect"]
        if not unit or "/" in unit or unit in (".", ".."):
            raise ValueError(f"not a unit name: {unit!r}")
    except (KeyError, TypeError, ValueError) as exc:
        say(f"{record_file}: not a record of a unit that answered ({type(exc).__name__}: {exc}): "
            f"{unit} is left as it is")
        return 1
    path = os.path.join(unit_dir, unit)
    try:
        with open(path) as handle:
            current = handle.read()
    except FileNotFoundError:
        current = None
    if current == text:
        say(f"{unit} is already the last unit that answered: nothing older to roll back to")
        return 1
    try:
        write_atomically(unit_dir, unit, text)
    except OSError as exc:
        say(f"could not put back the last {unit} that answered in {unit_dir}: {type(exc).__name__}: {exc}")
        return 1
    systemctl("daemon-reload")
    systemctl("reset-failed", unit)
    systemctl("restart", unit)
    result = check(expect, wait=True, inference=True)
    url = expect.get("url") if isinstance(expect, dict) else None
    if result["ok"]:
        say(f"rolled {unit} back to the last unit that answered ({record_file}): it answers again at {url}")
    else:
        say(f"rolled {unit} back to the last unit that answered ({record_file}), "
            f"but it does not answer either at {url}: {result.get('error')}")
    return 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="llamarig-check.py", description="Check one llama-server service.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--expect", metavar="FILE", help="the expectation, a JSON file")
    source.add_argument("--expect-json", metavar="JSON", help="the expectation, as JSON text")
    parser.add_argument("--wait", action="store_true", help="wait for the server to come up; stop at the first failure")
    parser.add_argument("--inference", action="store_true", help="also ask for one chat completion")
    parser.add_argument("--exposure", action="store_true", help="also measure systemd-analyze security's exposure")
    parser.add_argument("--journal", action="store_true", help="include the unit's journal tail on failure")
    parser.add_argument("--record", metavar="FILE", help="with --inference: the record of the last unit that answered; "
                        "when it is this unit and expectation and the service has not started since, no completion")
    parser.add_argument("--wait-ready", action="store_true",
                        help="only wait for the unit and /health, saying every few seconds what it waits for; exit 0")
    parser.add_argument("--rollback", metavar="RECORD", help="restore the last unit that answered, restart, check it")
    parser.add_argument("--unit-dir", metavar="DIR", help="where unit files live (with --rollback)")
    args = parser.parse_args(argv)
    if args.rollback:
        if not args.unit_dir:
            parser.error("--rollback needs --unit-dir")
        return rollback(args.rollback, args.unit_dir)
    if args.expect is None and args.expect_json is None:
        parser.error("one of --expect FILE, --expect-json JSON or --rollback RECORD is needed")
    try:
        if args.expect is not None:
            with open(args.expect) as handle:
                expect = json.load(handle)
        else:
            expect = json.loads(args.expect_json)
        if not isinstance(expect, dict):
            raise ValueError("the expectation is not a JSON object")
    except (OSError, ValueError) as exc:
        result = failed_verdict(None, f"bad expectation: {type(exc).__name__}: {exc}")
    else:
        if args.wait_ready:
            ready = check(expect, wait=True, progress=True)
            print(f"{expect.get('unit')}: " + ("answers /health" if ready["ok"] else ready.get("error", "not ready")),
                  flush=True)
            return 0
        result = check(expect, wait=args.wait, inference=args.inference, exposure=args.exposure,
                       with_journal=args.journal, record=args.record)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
