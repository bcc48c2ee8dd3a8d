"""``llamarig tune INVENTORY --host RIG --service NAME``: find the fastest configuration that fits, on the rig.

Candidates (``llamarig.tune.candidates``) are the declared service with one thing changed; each goes
through the deploy's own path (``llamarig.tune.prepare``: validation, the planner, the flags, the
unit) and what the planner says does not fit is not run. On the rig the declared service is stopped
for the tune, each candidate runs in its own transient unit with a deadline, is measured by the
bench's program, and is stopped; a guard unit restores the rig if the controller goes away
(``rig_programs/llamarig-tune.py``). At the end the declared service is started again and checked:
the same unit file, active, answering; power limits as they were. The ranking is by the objective
with its noise (``llamarig.tune.rank``); results go beside the bench's, under ``tune/``.

Exit status: 0 when the tune ran and the rig is back as declared; 1 when the rig could not be put
back as it was or nothing could be measured; 2 for usage errors.
"""

from __future__ import annotations

import json
import os
import sys
import time

from llamarig import layout
from llamarig.bench import store
from llamarig.commands.bench import depths_arg
from llamarig.commands.releases import ReleaseError, read_locks, release_of
from llamarig.hostdata.inventory import load_checked
from llamarig.hostdata.validate import service_gpus
from llamarig.lookups.rigssh import ssh_rig
from llamarig.tune.builds import build_of, other_builds, tune_lookups
from llamarig.tune.candidates import AXES, DEFAULT_AXES, Candidate, combined, with_forks
from llamarig.tune.checks import restore_problems, runs_the_release
from llamarig.tune.engine import Engine, Settings
from llamarig.tune.prepare import prepare
from llamarig.tune.rank import OBJECTIVES, rank, winner
from llamarig.tune.report import host_data_lines, margin_notes, table
from llamarig.tune.runners import RigRunner, TuneError

SCHEMA = 1
GUARD_SLACK_S = 900  # the guard's deadline past the tune's own: the last measurement and the restore


def add_parser(sub) -> None:
    tune = sub.add_parser("tune", help="find the fastest configuration of a service that fits, by measuring "
                                       "candidates on its rig; the rig is left as declared")
    tune.add_argument("inventory")
    tune.add_argument("--host", required=True, help="the rig")
    tune.add_argument("--service", required=True, help="the service to tune")
    tune.add_argument("--objective", choices=sorted(OBJECTIVES), default="decode",
                      help="decode or prefill tokens per second, or decode tokens per kWh (energy; GPUs only)")
    tune.add_argument("--depth", type=lambda t: depths_arg(t)[0], default=None,
                      help="the prompt length measured, in tokens (default 4096, or what the context allows)")
    tune.add_argument("--minutes", type=float, default=30.0, help="time for the measurements (default 30)")
    tune.add_argument("--axes", help=f"comma-separated, of: {', '.join(AXES)} (default: all but power)")
    tune.add_argument("--power", action="store_true", help="also try power limits in steps (the power axis)")
    tune.add_argument("--try", dest="tries", action="append", default=[], metavar="'KEY=VALUE ...'",
                      help="a candidate of your own: host-data keys of the service (or gpu_margin_mib), values as "
                           "JSON where they parse, e.g. --try 'threads=6 ubatch_size=1024' (repeatable)")
    tune.add_argument("--repetitions", type=int, default=3, help="requests per candidate per round (default 3)")
    tune.add_argument("--rounds", type=int, default=4, help="rounds at most; the first measures every candidate")
    tune.add_argument("--tokens", type=int, default=None, help="tokens generated per request (default: 64 for "
                                                               "decode and energy, 8 for prefill)")
    tune.add_argument("--load-timeout", type=float, default=600.0, help="seconds a candidate may take to load")
    tune.add_argument("--results", help=f"where results are kept (default: {store.DIR_NAME}/ beside the inventory)")
    tune.add_argument("--json", action="store_true", help="print the result as JSON")
    tune.set_defaults(func=cmd_tune)


def fail(text: str, code: int = 2) -> int:
    print(f"llamarig tune: {text}", file=sys.stderr)
    return code


def parse_axes(args) -> list[str] | str:
    axes = [a.strip() for a in (args.axes or ",".join(DEFAULT_AXES)).split(",") if a.strip()]
    unknown = [a for a in axes if a not in AXES]
    if unknown:
        return f"--axes {','.join(unknown)}: no such axis (axes: {', '.join(AXES)})"
    if args.power and "power" not in axes:
        axes.append("power")
    return axes


RIG_KEYS = ("gpu_margin_mib",)


def parse_try(text: str, number: int):
    """``--try 'threads=6 extra_args=["--mlock"]'`` -> a Candidate (ids t1, t2, ...), or the problem."""
    from llamarig.hostdata.schema import SERVICE_SCHEMA
    service, rig = {}, {}
    for word in text.split():
        key, eq, raw = word.partition("=")
        if not eq or not key:
            return f"--try {text!r}: {word!r} is not KEY=VALUE"
        if key not in SERVICE_SCHEMA and key not in RIG_KEYS or key in ("name", "model", "port"):
            return f"--try {text!r}: {key!r} is not a service key a tune may change"
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        (rig if key in RIG_KEYS else service)[key] = value
    if not service and not rig:
        return f"--try {text!r}: no KEY=VALUE"
    return Candidate(f"t{number}", "try " + text, "try", service, rig)


def cmd_tune(args) -> int:
    if not os.path.isfile(args.inventory):
        return fail(f"{args.inventory}: no such inventory file")
    axes = parse_axes(args)
    if isinstance(axes, str):
        return fail(axes)
    tries = [parse_try(t, i) for i, t in enumerate(args.tries, 1)]
    bad = next((t for t in tries if isinstance(t, str)), None)
    if bad:
        return fail(bad)
    args.tries = tries
    if args.repetitions < 2:
        return fail("--repetitions must be 2 or more (one request measures no noise)")
    if args.minutes <= 0 or args.rounds < 1:
        return fail("--minutes must be above 0 and --rounds 1 or more")
    loaded = load_checked(args.inventory)
    if loaded is None:
        return 1
    entries, docs = loaded
    if args.host not in docs:
        return fail(f"--host {args.host}: no such rig in {args.inventory} (rigs: {', '.join(docs)})")
    doc = docs[args.host]
    svc = next((s for s in doc["services"] if s["name"] == args.service), None)
    if svc is None:
        names = ", ".join(s["name"] for s in doc["services"]) or "none"
        return fail(f"--service {args.service}: {args.host} has no such service (services: {names})")
    gpus = service_gpus(doc, svc)
    if args.objective == "energy" and not gpus:
        return fail(f"--objective energy: service {args.service} on {args.host} uses no GPU, and only GPUs' draw "
                    "is measured")
    if "power" in axes and not gpus:
        return fail(f"--power: service {args.service} on {args.host} uses no GPU")
    lookups = tune_lookups()
    data = {e.name: e.data for e in entries}
    try:
        locks = read_locks(args.inventory)
        deployment = release_of(args.host, doc, locks, lookups)
    except ReleaseError as exc:
        return fail(str(exc), 1)
    rig_facts = None
    if not deployment.exact:  # no lock: the build the rig makes depends on what it has (nvcc, its cards)
        from llamarig.commands.lock import ResolveError, build_facts
        from llamarig.release.assemble import Deployment, make_release
        try:
            rig_facts = build_facts(args.host, doc, data[args.host])
        except ResolveError as exc:
            return fail(str(exc), 1)
        deployment = Deployment(deployment.rig, make_release(deployment.rig, rig_facts))
    unit = deployment.release.units[layout.unit_name(args.service)]
    depth = args.depth if args.depth is not None else min(4096, max(64, (svc["ctx_size"] or 8192) // 2))
    tokens = args.tokens or (8 if args.objective == "prefill" else 64)
    settings = Settings(objective=args.objective, depth=depth, repetitions=args.repetitions, tokens=tokens,
                        minutes=args.minutes, rounds=args.rounds, load_timeout_s=args.load_timeout, gpus=gpus)

    def say(text: str) -> None:
        print(f"{args.host} {args.service}: {text}", file=sys.stderr, flush=True)

    started = time.time()
    try:
        connection = ssh_rig(args.host, data[args.host])
        run = connection.__enter__()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the rig is said in one line
        return fail(f"{args.host}: unreachable: {type(exc).__name__}: {exc}", 1)
    try:
        return tune_on_rig(args, doc, svc, unit, deployment, (locks, lookups, rig_facts), run, settings, axes, say,
                           started)
    finally:
        connection.__exit__(None, None, None)


def tune_on_rig(args, doc, svc, unit, deployment, resolving, run, settings, axes, say, started) -> int:
    """``resolving``: (the locks, the lookups, the rig's build facts) every candidate is released with."""
    locks, lookups, rig_facts = resolving
    problem = runs_the_release(run, unit)
    if problem:
        return fail(f"{args.host} {args.service}: {problem}", 1)
    runner = RigRunner(run, args.service, unit.expect, settings.gpus,
                       settings.minutes * 60 + args.load_timeout + GUARD_SLACK_S, say=say,
                       load_timeout_s=args.load_timeout)
    builds = other_builds(args.host, doc, locks, lookups, say, rig_facts) if doc["tune_forks"] else {}
    for build, found in builds.items():
        if isinstance(found, str):
            say(f"{found}: not tried")
            continue
        problem = runner.build(found, doc)  # while the declared service still serves
        if problem:
            builds[build] = problem
            say(problem)
    try:
        facts = runner.begin()
    except TuneError as exc:
        return fail(f"{args.host} {args.service}: {exc}", 1)
    if facts.get("left_over"):
        say(f"a tune left over ({facts['left_over'].get('since')}) was found and put back first")
    say(f"{unit.unit} is stopped while the tune runs (at most {settings.minutes:g} minutes); a guard unit "
        "starts it again if this command goes away")
    outcome, end = None, None
    try:
        builds[build_of(doc)] = deployment.release.build

        def prep(candidate):
            from llamarig.tune.prepare import Prepared, changed_doc
            found = builds[build_of(changed_doc(doc, args.service, candidate))]
            if isinstance(found, str):
                return Prepared(candidate, problem=found)
            return prepare(args.host, doc, args.service, candidate, locks, lookups, found["key"], rig_facts)

        prepared = [prep(c) for c in with_forks(doc, svc, facts, axes) + args.tries]
        for p in prepared:
            if p.problem:
                say(f"{p.candidate.label}: not run: {p.problem}")
        say(f"{sum(1 for p in prepared if not p.problem)} candidate(s) to measure by {settings.objective} at depth "
            f"{settings.depth}")

        def combine(best_by_axis, next_id):
            c = combined(best_by_axis, next_id)
            return prep(c) if c is not None else None

        outcome = Engine(runner, prepared, settings, combine=combine, say=say).run()
    finally:
        end = runner.end()
    return report(args, doc, unit, deployment, settings, facts, outcome, end, started)


def report(args, doc, unit, deployment, settings, facts, outcome, end, started) -> int:
    labels = {cid: p.candidate.label for cid, p in outcome.prepared.items()}
    ranked = rank(labels, outcome.measured, outcome.failures, outcome.not_run, settings.objective, settings.depth)
    best = winner(ranked)
    problems = restore_problems(facts, end)
    notes = margin_notes(outcome.failures, outcome.prepared, doc["gpu_margin_mib"])
    if best is not None:
        keys = outcome.prepared[best.id].host_keys
        notes.append(f"winner: {best.label} ({best.percent:+.1f}% over the declared configuration, beyond the "
                     f"noise of +-{best.noise:.3g}); to keep it, in {args.host}'s host data:")
        notes += [f"    {line}" for line in host_data_lines(keys)]
    else:
        keys = None
        notes.append("no candidate beat the declared configuration beyond the noise: keep it as it is")
    notes.append("the rig is back as declared: the same unit file, active and answering, power limits as found"
                 if not problems else "NOT put back as declared: " + "; ".join(problems))
    minutes = (time.time() - started) / 60
    title = (f"{args.host} {args.service}: tune by {settings.objective} at depth {settings.depth} "
             f"({settings.repetitions} requests a round, {outcome.rounds_run} round(s), {minutes:.1f} min)")
    text = table(title, ranked, settings.objective, notes)
    result = {
        "schema": SCHEMA, "rig": args.host, "service": args.service,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "minutes": round(minutes, 2),
        "settings": vars(settings), "rig_facts": {k: facts.get(k) for k in ("cpus", "cores", "power")},
        "declared": {"argv": list(unit.argv), "unit_digest": unit.digest, "fork": doc["build_fork"],
                     "build_key": deployment.release.build["key"]},
        "candidates": [p.to_json() for p in outcome.prepared.values()],
        "ranking": [r.to_json() for r in ranked], "winner": best.id if best else None, "winner_keys": keys,
        "failures": outcome.failures, "not_run": outcome.not_run, "log": outcome.log,
        "measurements": outcome.measured, "restore": end, "restore_problems": problems, "aborted": outcome.aborted,
    }
    root = store.results_root(args.inventory, args.results)
    directory = store.service_dir(root, args.host, args.service) / "tune"
    path, _ = store.save(directory, store.stamp(started), result, text)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "measurements"}, indent=1, default=str))
    else:
        print(text + f"  written: {path}", flush=True)
    if problems:
        return 1
    return 0 if outcome.measured else 1
