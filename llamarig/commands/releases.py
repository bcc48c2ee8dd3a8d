"""The release a command shows for a rig: exact under ``rigs.lock``, else a preview that says what it assumed.

``render``, ``plan INVENTORY`` and ``verify`` read a rig's release here, through the
same resolver and assembly as the deploy (``llamarig.release``). Under a lock the
release is what a deploy installs, byte for byte. Without one, what only the rig
knows (nvcc, the cards' compute capability) is assumed, and what cannot be looked
up (a ref, a revision) keeps its declared name; the preview lists both.
"""

from __future__ import annotations

from llamarig.release import lock
from llamarig.release.assemble import Deployment, assumed_facts, frozen_release, make_release
from llamarig.release.resolve import LockUse, real_lookups, resolve_rig


class ReleaseError(Exception):
    """The problems that stop a rig's release, already worded (one line each)."""


def read_locks(inventory: str) -> tuple[object, dict | None]:
    path = lock.lock_for(inventory)
    try:
        return path, lock.read(path) if path is not None else None
    except lock.LockError as exc:
        raise ReleaseError(str(exc)) from None


def release_of(host: str, doc: dict, locks: tuple[object, dict | None], lookups=None,
               check_explicit: bool = False) -> Deployment:
    path, entries = locks
    lookups = lookups or real_lookups()
    use = LockUse(path, entries.get(host)) if entries is not None else None
    rig, problems = resolve_rig(host, doc, lookups, use, preview=use is None, check_explicit=check_explicit)
    if rig is None:
        raise ReleaseError("\n".join(map(str, problems)))
    if rig.frozen is not None:
        release, problems = frozen_release(rig)
        if problems:
            raise ReleaseError("\n".join(map(str, problems)))
        return Deployment(rig, release)
    facts, assumed = assumed_facts(doc)
    notes = [f"no {lock.LOCK_NAME}: assumes {assumed}"]
    return Deployment(rig, make_release(rig, facts, notes))
