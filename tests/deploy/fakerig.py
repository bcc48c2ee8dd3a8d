"""A rig played by pyinfra's own ``@fake`` connector, so that deploy.py runs whole without a container.

The inventory a test writes calls ``install()``, which makes every ``@fake`` host:
- answer facts from the scenario (``$LLAMARIG_FAKE_RIG``, JSON): ``responses``, a list of
  ``[substring, stdout]`` (or ``[substring, {"stdout": ..., "success": false}]``) tried in order
  (a third item names the one host it answers),
  then a small file system, ``files`` (path -> text, or ``{"link": target}``), which answers
  pyinfra's stat and hash facts and llamarig's sha256 fact;
- record every command and upload, in order, as JSON lines in ``$LLAMARIG_FAKE_LOG``.
Anything else succeeds with no output, as the connector does by default.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path

_STAT = re.compile(r"^! \(test -e (\S+) \|\| test -L")
_HASH = re.compile(r"^test -e (\S+) && \( (sha1sum|sha256sum|md5sum) ")
_SHA256 = re.compile(r"^test -f (\S+) && sha256sum \S+ \| cut")
_EXIT = re.compile(r"(^|;)\s*exit [1-9][0-9]*\s*$")
_DIGESTS = {"sha1sum": hashlib.sha1, "sha256sum": hashlib.sha256, "md5sum": hashlib.md5}


def _path(token: str) -> str:
    return shlex.split(token)[0]


def answer(scenario: dict, command: str, host: str = "") -> tuple[bool, list[str]]:
    """(success, stdout lines) of one command on the scenario's rig ``host`` (a response with a third item
    answers that host only)."""
    if _EXIT.search(command):  # what sh would do with llamarig's failing commands (`...; exit 1`)
        return False, []
    for needle, response, *only in scenario.get("responses", []):
        if needle in command and (not only or only[0] == host):
            if isinstance(response, dict):
                return bool(response.get("success", True)), str(response.get("stdout", "")).splitlines()
            return True, str(response).splitlines()
    files = scenario.get("files", {})
    m = _STAT.match(command)
    if m:
        path = _path(m.group(1))
        if path in files:
            entry = files[path]
            if isinstance(entry, dict):
                return True, [f"user=root group=root mode=lrwxrwxrwx atime=1 mtime=1 ctime=1 size=1 "
                              f"'{path}' -> '{entry['link']}'"]
            return True, [f"user=root group=root mode=-rw-r--r-- atime=1 mtime=1 ctime=1 size={len(entry)} '{path}'"]
        if any(p.startswith(path.rstrip("/") + "/") for p in files):
            return True, [f"user=root group=root mode=drwxr-xr-x atime=1 mtime=1 ctime=1 size=4096 '{path}'"]
        return True, []
    m = _HASH.match(command)
    if m:
        path = _path(m.group(1))
        if isinstance(files.get(path), str):
            return True, [f"{_DIGESTS[m.group(2)](files[path].encode()).hexdigest()}  {path}"]
        return True, []
    m = _SHA256.match(command)
    if m:
        path = _path(m.group(1))
        if isinstance(files.get(path), str):
            return True, [hashlib.sha256(files[path].encode()).hexdigest()]
        return True, []
    return True, []


def install() -> None:
    from pyinfra.connectors import fake
    from pyinfra.connectors.util import CommandOutput, OutputLine

    if "LLAMARIG_FAKE_RIG" not in os.environ:  # loaded by llamarig's own commands (lock, check): nothing to play
        return
    scenario = json.loads(Path(os.environ["LLAMARIG_FAKE_RIG"]).read_text())
    log = Path(os.environ["LLAMARIG_FAKE_LOG"])

    def record(entry: dict) -> None:
        with log.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def run_shell_command(self, command, print_output=False, print_input=False, **arguments):
        text = command if isinstance(command, str) else command.get_raw_value()
        record({"host": self.host.name, "run": text})
        ok, lines = answer(scenario, text, self.host.name)
        return ok, CommandOutput([OutputLine("stdout", line) for line in lines])

    def put_file(self, filename_or_io, remote_filename, remote_temp_filename=None, print_output=False,
                 print_input=False, **arguments):
        if hasattr(filename_or_io, "read"):
            filename_or_io.seek(0)
            data = filename_or_io.read()
        else:
            data = Path(filename_or_io).read_bytes()
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        record({"host": self.host.name, "put": remote_filename, "content": data})
        return True

    fake.FakeConnector.run_shell_command = run_shell_command
    fake.FakeConnector.put_file = put_file
