"""``llamarig lock INVENTORY [--update]``: resolve every rig and write ``rigs.lock`` beside the inventory.

Resolving needs no model data: refs through ``git ls-remote``, models through
the Hub's metadata, and (for rigs with GPUs) ``nvcc`` and the cards' compute
capability read on the rig over SSH, since they decide the build's CMake
arguments. Without ``--update`` whatever the lock already covers stays as it
is and only new or changed data is resolved; ``--update`` resolves every ref
and revision again (they move forward). Either way it prints what changed.
The entry is made from the same release a deploy installs
(``llamarig.release.resolve`` and ``llamarig.release.assemble``).
"""

from __future__ import annotations

import sys

from llamarig.hostdata.inventory import load_checked
from llamarig.hostdata.validate import format_problems
from llamarig.lookups import rigfacts
from llamarig.release import lock
from llamarig.release.assemble import facts_from_lock, facts_from_rig, make_release
from llamarig.release.build import cmake_args
from llamarig.release.resolve import LockUse, real_lookups, resolve_rig


class ResolveError(Exception):
    pass


def build_facts(host: str, doc: dict, data: dict):
    """The RigFacts a deploy's build task would decide on the rig (read over SSH when the rig has GPUs)."""
    if not doc["gpus"]:
        return facts_from_rig(doc, None, [])[0]
    try:
        nvcc, caps = rigfacts.read_build_facts(host, data)
    except rigfacts.RigFactsError as exc:
        raise ResolveError(str(exc)) from None
    facts, why = facts_from_rig(doc, nvcc, caps)
    if facts is None:
        raise ResolveError(f"{host}: {why}")
    return facts


def resolve_entry(host: str, doc: dict, data: dict, previous: dict | None, update: bool, path, lookups=None) -> dict:
    """The rig's lock entry: what ``previous`` covers is kept unless ``update``, the rest resolved."""
    use = None if update or previous is None else LockUse(path, previous, "reuse")
    rig, problems = resolve_rig(host, doc, lookups or real_lookups(), use, check_explicit=False)
    if rig is None:
        raise ResolveError(format_problems(problems))
    keep_build = use is not None and not lock.build_uncovered(previous, doc)
    facts = facts_from_lock(previous) if keep_build else build_facts(host, doc, data)
    release = make_release(rig, facts)
    return lock.rig_entry(doc, rig.commit, facts.cuda, list(facts.archs),
                          cmake_args(doc, facts.cuda, list(facts.archs)), release.build["key"], rig.models,
                          release.unit_texts())


def cmd_lock(args) -> int:
    loaded = load_checked(args.inventory)
    if loaded is None:
        return 1
    entries, docs = loaded
    path = lock.lock_path(args.inventory)
    try:
        old = lock.read(path)
    except lock.LockError as exc:
        if not args.update:
            print(f"llamarig lock: {exc}", file=sys.stderr)
            return 1
        old = None
    data = {e.name: e.data for e in entries}
    new, errors = {}, []
    for host, doc in docs.items():
        try:
            new[host] = resolve_entry(host, doc, data[host], (old or {}).get(host), args.update, path)
        except ResolveError as exc:
            errors.append(str(exc))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        print(f"llamarig lock: {len(errors)} rig(s) could not be resolved; {path} was left as it was", file=sys.stderr)
        return 1
    lines = lock.changes(old, new)
    if old is not None and not lines:
        print(f"llamarig lock: {path} is up to date ({len(new)} rig(s))")
        return 0
    lock.write(path, new, args.inventory)
    print("\n".join(lines))
    print(f"llamarig lock: wrote {path} ({len(new)} rig(s), {len(lines)} change(s))")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("lock", help=f"resolve every rig and write {lock.LOCK_NAME} beside the inventory")
    p.add_argument("inventory")
    p.add_argument("--update", action="store_true", help="resolve every ref and revision again (move forward)")
    p.set_defaults(func=cmd_lock)
