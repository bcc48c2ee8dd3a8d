"""Secrets on the controller: a Hub token and server API keys, from the environment or a file.

They are read here, on the controller, and travel to a rig only as root-only files
(tasks/models.py ``secret_file``); a unit names the file (``LoadCredential=``), never
the value. Nothing here logs or returns a secret inside a message.
"""

from __future__ import annotations

import os


class SecretError(Exception):
    pass


def read_secret(env: str | None, file: str | None, what: str, required: bool) -> str | None:
    """The secret named by an environment variable or a file on the controller; None when neither is set.

    ``required``: an environment variable or file that is named but empty or missing is an error
    (an API key the operator declared must not silently turn into no key)."""
    if file:
        path = os.path.expanduser(file)
        try:
            with open(path) as handle:
                value = handle.read().strip()
        except OSError as exc:
            raise SecretError(f"{what}: cannot read {file} on the controller ({exc.strerror})") from None
        if not value:
            raise SecretError(f"{what}: {file} is empty")
        if "\n" in value:
            raise SecretError(f"{what}: {file} holds more than one line")
        _printable(value, what, file)
        return value
    if env:
        value = (os.environ.get(env) or "").strip()
        if not value and required:
            raise SecretError(f"{what}: the environment variable {env} is not set on the controller")
        if value:
            _printable(value, what, f"the environment variable {env}")
        return value or None
    return None


def _printable(value: str, what: str, where: str) -> None:
    """A secret with a control character inside would not survive the files it travels in (never shown)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise SecretError(f"{what}: {where} holds a control character (the value is not shown)")


def hub_token(doc: dict) -> str | None:
    """The rig's Hub token: `hub_token_file`, else `hub_token_env` (optional: public repositories need none)."""
    return read_secret(doc.get("hub_token_env"), doc.get("hub_token_file"), "hub token", required=False)


def api_key(service: dict) -> str | None:
    """A service's API key: `api_key_file` or `api_key_env` (required once named)."""
    return read_secret(service.get("api_key_env"), service.get("api_key_file"),
                       f"services {service['name']} API key", required=True)
