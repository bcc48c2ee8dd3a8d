"""The tune engine on the GPU machine, with its local runner, and llama.cpp's own fit beside it.

    python bench/tune_device/run_tune.py --model M.gguf --llama BIN --ik BIN --out DIR
        [--minutes 8] [--depth 1024] [--repetitions 5] [--rounds 3] [--axes ubatch,margin,fork_options]

The rig is ``bench/tune_device/inventory.py`` (one 24 GiB budget on an H200 held by a ballast). The
candidates come from ``llamarig.tune.candidates.with_forks`` and go through ``llamarig.tune.prepare``
(validation, the planner, the flags) exactly as on a rig: the declared service on llama.cpp (c0),
its axes, and the same on ik_llama.cpp (the inventory's tune_forks, b1c0...). Beside them, in every round, the
reference: llama.cpp's own ``--fit on`` (its default target, 1024 MiB free) at the same context,
cache, flash attention, batch and threads as the declared service, from the same binary. The engine
(``llamarig.tune.engine``) interleaves them; ``LocalRunner`` starts each as a child process
(``rig_programs/llamarig-tune.py``'s LocalServer) and measures it with the bench program's code. Power
limits are read, never set. The GPU's memory.used is sampled during every measurement (the bench's
sampler): the peak minus what was used before the first candidate (the ballast) is each candidate's.

Writes DIR/tune.json (everything: candidates, argv, measurements, ranking by decode and by prefill,
peaks) and DIR/tune.txt (the two tables); candidates' logs under DIR/logs/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

from llamarig.hostdata.inventory import load_checked  # noqa: E402
from llamarig.lookups.hub import HubFile, ResolvedModel  # noqa: E402
from llamarig.planner.gguf import read_model  # noqa: E402
from llamarig.release.resolve import Lookups  # noqa: E402
from llamarig.release.assemble import RigFacts  # noqa: E402
from llamarig.tune.candidates import Candidate, combined, with_forks  # noqa: E402
from llamarig.tune.engine import Engine, Settings  # noqa: E402
from llamarig.tune.prepare import Prepared, changed_doc, prepare, release_for  # noqa: E402
from llamarig.tune.rank import rank  # noqa: E402
from llamarig.tune.report import table  # noqa: E402
from llamarig.tune.runners import LocalRunner  # noqa: E402

INVENTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inventory.py")


def lookups(model_file: str) -> Lookups:
    size = os.path.getsize(model_file)

    def hub_model(name, model, endpoint, token):
        return ResolvedModel(model["repo"], model["revision"], model["revision"],
                             [HubFile(model["file"], size, "0" * 64)], model["file"], endpoint)

    return Lookups(git_ref=lambda url, ref: "0" * 40, hub_model=hub_model,
                   headers=lambda resolved, token: read_model(model_file),
                   hub_token=lambda doc: None, api_key=lambda svc: None)


def rig_doc() -> dict:
    entries, docs = load_checked(INVENTORY)
    return docs["h200"]


def preparer(doc: dict, look: Lookups, binaries: dict, local: dict, fork_args: dict | None = None):
    """prepare() as the CLI does it: each candidate against its own build (the rig's, or a tune_forks one),
    whose llama-server is mapped to this machine's build of that fork; ``fork_args[fork]``: arguments added to
    every candidate of that fork (what it needs to serve on this machine at all, found by session.sh)."""
    def prep(c: Candidate) -> Prepared:
        fork = c.rig.get("build_fork", doc["build_fork"])
        extra = (fork_args or {}).get(fork) or []
        if extra and c.service.get("extra_args", [])[-len(extra):] != extra:
            # as the service's extra_args: in the plan's arguments and in the winner's host keys alike
            c = dataclasses.replace(c, label=f"{c.label} [{' '.join(extra)}]", service={
                **c.service, "extra_args": [*doc["services"][0].get("extra_args", []), *extra]})
        _rig, release, problem = release_for("h200", changed_doc(doc, "bench", c), (None, None), look,
                                             RigFacts(True, ("90",)), preview=True)
        if release is None:
            return Prepared(c, problem=problem)
        p = prepare("h200", doc, "bench", c, (None, None), look, release.build["key"], RigFacts(True, ("90",)))
        if p.binary:
            binaries[p.binary] = local.get(fork) or ""
            if not binaries[p.binary]:
                p.problem = f"no {fork} build on this machine"
        return p
    return prep


def fit_reference(doc: dict, binary: str, model_file: str, threads: int | None) -> Prepared:
    svc = doc["services"][0]
    argv = ["--model", model_file, "--ctx-size", str(svc["ctx_size"]), "--parallel", str(svc["parallel"]),
            "--flash-attn", "on", "--fit", "on", "--host", "127.0.0.1", "--port", "@PORT@"]
    c = Candidate("fit", "llama.cpp --fit on (reference)", "reference")
    return Prepared(c, binary=binary, argv=argv,
                    properties=["Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=0"])


def memory_used() -> list[int]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        return [int(float(x)) for x in out.split()]
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def peaks(raws: list[dict]) -> list[int] | None:
    best = None
    for raw in raws:
        power = raw.get("power") or {}
        fields = power.get("fields") or []
        if "memory.used" not in fields:
            continue
        i = fields.index("memory.used")
        for sample in power.get("samples") or []:
            values = [row[i] for row in sample[1:]]
            if None in values:
                continue
            best = values if best is None else [max(a, b) for a, b in zip(best, values)]
    return best


def dropped(pattern: str, label: str) -> bool:
    return label.startswith(pattern[1:]) if pattern.startswith("^") else pattern in label


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--llama", required=True, help="mainline llama-server")
    ap.add_argument("--ik", help="ik_llama.cpp's llama-server (none: mainline only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=8)
    ap.add_argument("--depth", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--axes", default="ubatch,margin,fork_options")
    ap.add_argument("--ubatches", default=None, help="ubatch sizes the ubatch axis tries (default: all)")
    ap.add_argument("--drop", default="", help="comma-separated: candidates whose label (spaces as _) contains one are "
                    "left out; ^WORDS: whose label starts with WORDS (the serving build's own: ^ubatch_size)")
    ap.add_argument("--finalists", type=int, default=2, help="best candidates measured again (by decode; one by prefill)")
    ap.add_argument("--gpus", default="0", help="nvidia-smi indices sampled (empty: none)")
    ap.add_argument("--load-timeout", type=float, default=300)
    ap.add_argument("--ik-arg", action="append", default=[],
                    help="one more argument for every ik_llama.cpp candidate (repeat; --ik-arg=-no-ooae)")
    ap.add_argument("--list", action="store_true", help="print the candidates' arguments and stop (no GPU needed)")
    args = ap.parse_args()
    # SIGTERM as an interrupt: the engine stops the candidate it measures on the way out (a SIGKILL is
    # covered by the candidates' own PR_SET_PDEATHSIG)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    os.makedirs(args.out, exist_ok=True)
    gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    look = lookups(args.model)
    say = lambda text: print(f"tune: {text}", flush=True)  # noqa: E731
    binaries = {}

    def map_argv(argv):
        out = list(argv)
        for i, word in enumerate(out[:-1]):
            if word in ("--model", "-m"):
                out[i + 1] = args.model
        return out

    runner = LocalRunner(os.path.join(args.out, "logs"), gpus, binary=lambda b: binaries.get(b, b), argv=map_argv,
                         say=say, load_timeout_s=args.load_timeout)
    facts = runner.begin()
    before = memory_used()
    say(f"rig facts: {json.dumps(facts)}; memory.used before: {before}")
    axes = [a for a in args.axes.split(",") if a]
    doc = rig_doc()
    local = {"llama.cpp": args.llama, "ik_llama.cpp": args.ik}
    prep = preparer(doc, look, binaries, local, {"ik_llama.cpp": args.ik_arg})
    ubatches = {int(u) for u in args.ubatches.split(",")} if args.ubatches else None
    drop = [d for d in args.drop.split(",") if d]
    chosen = [c for c in with_forks(doc, doc["services"][0], facts, axes)
              if not (ubatches and c.axis == "ubatch" and c.service["ubatch_size"] not in ubatches)
              and not any(dropped(d, c.label.replace(" ", "_")) for d in drop)]
    prepared = [prep(c) for c in chosen]
    fit = fit_reference(doc, args.llama, args.model, None)
    prepared = prepared[:1] + [fit] + prepared[1:]
    for p in prepared:
        state = f"not run: {p.problem}" if p.problem else " ".join(p.argv)
        say(f"{p.candidate.id} {p.candidate.label}: {state}")
    if args.list:
        return 0

    def combine(best_by_axis, next_id):
        c = combined(best_by_axis, next_id)
        return prep(c) if c is not None else None

    settings = Settings(objective="decode", depth=args.depth, repetitions=args.repetitions, tokens=args.tokens,
                        minutes=args.minutes, rounds=args.rounds, load_timeout_s=args.load_timeout, gpus=gpus,
                        keep=["fit"], also_rank=["prefill"], finalists=args.finalists)
    t0 = time.time()

    def keep(o) -> None:  # partial results after every measurement: a call that ends early loses nothing
        partial = {"seconds": round(time.time() - t0, 1), "log": o.log, "failures": o.failures,
                   "peak_memory_used_mib": {cid: peaks(raws) for cid, raws in o.measured.items()},
                   "measurements": o.measured, "memory_used_before_mib": before}
        with open(os.path.join(args.out, "partial.json.tmp"), "w") as handle:
            json.dump(partial, handle, default=str)
        os.replace(os.path.join(args.out, "partial.json.tmp"), os.path.join(args.out, "partial.json"))

    outcome = Engine(runner, prepared, settings, combine=combine, say=say, after=keep).run()
    labels = {cid: p.candidate.label for cid, p in outcome.prepared.items()}
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "seconds": round(time.time() - t0, 1),
              "settings": dataclasses.asdict(settings), "facts": facts, "memory_used_before_mib": before,
              "candidates": [p.to_json() for p in outcome.prepared.values()], "failures": outcome.failures,
              "not_run": outcome.not_run, "log": outcome.log, "rounds_run": outcome.rounds_run,
              "peak_memory_used_mib": {cid: peaks(raws) for cid, raws in outcome.measured.items()},
              "measurements": outcome.measured, "ranking": {}}
    texts = []
    for objective in ("decode", "prefill"):
        for baseline in ("c0", "fit"):
            ranked = rank(labels, outcome.measured, outcome.failures, outcome.not_run, objective, args.depth,
                          baseline=baseline)
            result["ranking"][f"{objective}-vs-{baseline}"] = [r.to_json() for r in ranked]
            texts.append(table(f"{objective} at depth {args.depth}, against "
                               f"{'llamarig plan on llama.cpp (c0)' if baseline == 'c0' else 'llama.cpp --fit on'}",
                               ranked, objective, [], against="declared" if baseline == "c0" else "fit"))
    with open(os.path.join(args.out, "tune.json"), "w") as handle:
        json.dump(result, handle, indent=1, default=str)
    with open(os.path.join(args.out, "tune.txt"), "w") as handle:
        handle.write("\n".join(texts))
    print("\n".join(texts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
