"""The controller's one way to a rig outside pyinfra (``llamarig verify``, ``lock``, ``bench``): SSH with
the rig's pyinfra connection data, through paramiko (pyinfra's own transport)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

CONNECT_TIMEOUT_S = 10


class _AcceptUnknownKey:
    """ssh_strict_host_key_checking no/off: accept a key not in known_hosts, and record it nowhere."""

    def missing_host_key(self, client, hostname, key):
        return None


@contextmanager
def ssh_rig(host: str, data: dict):
    """Connect to rig ``host`` as pyinfra would; yields ``run(command, timeout) -> (status, stdout, stderr)``.

    ``status`` is None when the command could not finish (connection lost, timeout). Raises on connect.
    """
    import paramiko

    logging.getLogger("paramiko").addHandler(logging.NullHandler())  # errors come back as lines, not log noise
    client = paramiko.SSHClient()
    if str(data.get("ssh_strict_host_key_checking") or "").lower() in ("no", "off"):
        client.set_missing_host_key_policy(_AcceptUnknownKey())
    else:
        client.load_system_host_keys()
        if data.get("ssh_known_hosts_file"):
            client.get_host_keys().load(os.path.expanduser(data["ssh_known_hosts_file"]))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = data.get("ssh_key")
    client.connect(
        hostname=data.get("ssh_hostname") or host, port=int(data.get("ssh_port") or 22),
        username=data.get("ssh_user"), password=data.get("ssh_password"),
        key_filename=os.path.expanduser(key) if key else None, passphrase=data.get("ssh_key_password"),
        allow_agent=data.get("ssh_allow_agent", True), look_for_keys=data.get("ssh_look_for_keys", True),
        timeout=CONNECT_TIMEOUT_S, banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S)
    sudo = "sudo -n " if data.get("_sudo") else ""

    def run(command: str, timeout: float = 30, on_line=None) -> tuple[int | None, str, str]:
        """``timeout``: the longest silence on stdout. ``on_line(text)`` sees each stdout line as it comes."""
        try:
            _, out, err = client.exec_command(sudo + command, timeout=timeout)
            if on_line is None:
                stdout = out.read().decode("utf-8", "replace")
            else:
                lines = []
                for raw in iter(out.readline, ""):
                    lines.append(raw)
                    on_line(raw.rstrip("\n"))
                stdout = "".join(lines)
            stderr = err.read().decode("utf-8", "replace")
            return out.channel.recv_exit_status(), stdout, stderr
        except (OSError, paramiko.SSHException) as exc:
            return None, "", f"{type(exc).__name__}: {exc}"

    def open_channel(command: str):
        """A command left running: (stdin, stdout, stderr) of its channel (``llamarig tune``'s holder)."""
        return client.exec_command(sudo + command)

    run.open = open_channel
    try:
        yield run
    finally:
        client.close()


