"""Install a program of ``rig_programs/`` on the rig, where ``llamarig.layout.libexec`` says."""

from __future__ import annotations

import posixpath

from pyinfra.operations import files

from llamarig import layout, programs


def install(doc: dict, name: str):
    """Put ``rig_programs/NAME`` at ``BUILD_ROOT/libexec/NAME`` (0755); returns its path on the rig."""
    dest = layout.libexec(doc["build_root"], name)
    files.directory(name="llamarig directories", path=posixpath.dirname(dest), present=True)
    files.put(name=f"Rig program {name}", src=str(programs.path(name)), dest=dest, mode="755")
    return dest
