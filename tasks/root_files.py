"""Root-only files on a rig that hold secrets or records: written atomically, compared by digest, never shown."""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, operation


class FileSha256(FactBase):
    """sha256 of a file, or None when it does not exist."""

    def command(self, path):
        return f"test -f {shlex.quote(path)} && sha256sum {shlex.quote(path)} | cut -d' ' -f1 || true"

    def process(self, output):
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines else None


@operation()
def secret_file(path: str, secret: str):
    """
    Keep a root-only (0600) file holding ``secret``, without the secret in any command, diff or log.

    + path: the file on the rig
    + secret: its content

    Compares digests, and uploads to a temporary file in a 0700 directory before moving it in place.

    **Example:**

    .. code:: python

        secret_file(name="Hub token", path="/etc/llamarig/hub-token", secret=token)
    """
    if host.get_fact(FileSha256, path=path) == hashlib.sha256(secret.encode()).hexdigest():
        host.noop(f"{path} is up to date")
        return
    directory = str(PurePosixPath(path).parent)
    tmp = f"{directory}/.{PurePosixPath(path).name}.tmp"
    q, qt = shlex.quote(directory), shlex.quote(tmp)
    yield f"mkdir -p {q} && chmod 700 {q} && rm -f {qt} && (umask 077; : > {qt})"
    yield FileUploadCommand(StringIO(secret), tmp)
    yield f"chmod 600 {qt} && mv {qt} {shlex.quote(path)}"
