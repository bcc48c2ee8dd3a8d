"""Whether a ``llamarig tune`` is running on the rig: a deploy must not start services under it."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from llamarig import layout


class TunesRunning(FactBase):
    """The services whose tune is running (its state in the tune's folder and its guard unit active), with
    the time the tune began: {service: started}."""

    def command(self):
        folder = shlex.quote(layout.TUNE_DIR)
        guard = layout.tune_guard_unit("$s")
        return (f'for f in {folder}/*.json; do [ -f "$f" ] || continue; s=$(basename "$f" .json); '
                f'systemctl is-active --quiet "{guard}" && echo "$s $(stat -c %y "$f" | cut -c1-19)"; done; true')

    def process(self, output):
        running = {}
        for line in output:
            name, _, since = line.strip().partition(" ")
            if name:
                running[name] = since.strip()
        return running
