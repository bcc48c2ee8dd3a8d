"""The tune's schedule: every candidate once, then the finalists again, interleaved, inside a deadline.

Round 1 measures every candidate that fits (the declared configuration first); then the engine may
add the combination of every axis's best value (``combine``), and measures the finalists (the
declared configuration, the combination and the best few) in further rounds, each round in another
order, so that drift (heat, clocks, a neighbour's load) spreads over all of them instead of picking
the winner. A candidate that fails to start, or crashes while measured, is recorded with the failure's
words (its log's own line) and not tried again. Nothing is started that the time left cannot finish
(each measurement's time is estimated from the ones before). The runner (``llamarig.tune.runners``) does the starting and measuring: on
a rig through systemd, or locally.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field

from llamarig.tune.candidates import build_prefix
from llamarig.tune.prepare import Prepared
from llamarig.tune.rank import rank, score

REQUEST_FLOOR_S = 120.0   # the shortest bound on one request of a measurement

# What a server prints when it dies under load: it is reported as crashed (out of memory where it says so),
# with its own line, instead of as a request that got no answer.
RUN_OOM = re.compile(r"out of memory|cudaMalloc failed|failed to allocate", re.IGNORECASE)
CRASH = re.compile(r"CUDA error|GGML_ASSERT|ggml_abort|Segmentation fault|terminate called|"
                   r"illegal memory access|core dumped|SIGSEGV|SIGABRT|\bAborted\b")


def failure_of(raw: dict) -> dict:
    """A measurement that gave no figures, in words: crashed when the candidate's log says so (its first such
    line: the cause; later ones are the abort), out of memory when that line says it, else not measured."""
    error = str(raw.get("error"))[:400]
    log = raw.get("log") or ""
    crash = next((line.strip() for line in log.splitlines() if CRASH.search(line)), None)
    if crash:
        kind = "out of memory" if RUN_OOM.search(crash) else "crashed"
        failure = {"kind": kind, "detail": f"{crash[-300:]} (the measurement: {error})"}
    else:
        failure = {"kind": "not measured", "detail": error}
    if log:
        failure["log"] = log
    return failure


@dataclass
class Settings:
    objective: str = "decode"
    depth: int = 4096
    repetitions: int = 3        # requests per candidate per round
    tokens: int = 64
    warmup: int = 1
    minutes: float = 30.0
    rounds: int = 4
    finalists: int = 3          # best candidates kept after round 1, besides the declared and the combination
    load_timeout_s: float = 600.0
    gpus: list[int] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)             # ids measured in every round (a reference)
    also_rank: list[str] = field(default_factory=list)        # objectives whose best few are finalists too


@dataclass
class Outcome:
    prepared: dict[str, Prepared]
    measured: dict[str, list[dict]] = field(default_factory=dict)   # id -> raw bench results, one per round
    failures: dict[str, dict] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)                    # every start/measure, in order
    rounds_run: int = 0
    aborted: str | None = None


class Engine:
    def __init__(self, runner, prepared: list[Prepared], settings: Settings, combine=None, say=print,
                 clock=time.monotonic, after=None):
        """``after(outcome)``: called after every measurement (a caller keeps partial results with it)."""
        self.runner, self.settings, self.combine, self.say, self.clock = runner, settings, combine, say, clock
        self.after = after
        self.outcome = Outcome({p.candidate.id: p for p in prepared})
        self.outcome.not_run = {p.candidate.id: p.problem for p in prepared if p.problem}
        seen: dict = {}
        for p in prepared:  # two candidates that run the same thing are measured once
            if p.problem:
                continue
            key = (p.binary, tuple(p.argv), tuple(sorted(p.candidate.power.items())))
            if key in seen:
                p.problem = f"the same arguments as {seen[key]}"
                self.outcome.not_run[p.candidate.id] = p.problem
            else:
                seen[key] = p.candidate.label
        self.durations: list[float] = []
        self.slowest_request_s = 0.0
        self.power_now: dict = {}

    # --- one measurement ---------------------------------------------------------------------------

    def bench_spec(self, deadline: float | None = None) -> dict:
        """The bench's request; ``timeout_s`` bounds each HTTP request of it: ten times the slowest request
        measured so far (at least ``REQUEST_FLOOR_S``), never past the tune's deadline, so that a candidate
        that hangs is reported as not measured instead of holding the tune."""
        s = self.settings
        timeout = max(REQUEST_FLOOR_S, 10 * self.slowest_request_s)
        if deadline is not None:
            timeout = min(timeout, max(REQUEST_FLOOR_S / 2, deadline - self.clock()))
        return {"depths": [s.depth], "repetitions": s.repetitions, "tokens": s.tokens, "warmup": s.warmup,
                "gpus": list(s.gpus), "fit_depths": False, "timeout_s": round(timeout, 1)}

    def estimate(self) -> float:
        """The longest measurement so far (the first one is always made)."""
        return max(self.durations) if self.durations else 0.0

    def measure(self, p: Prepared, round_no: int, deadline: float) -> None:
        cid, o = p.candidate.id, self.outcome
        started_at = self.clock()
        want = {str(g): w for g, w in p.candidate.power.items()}
        if want != self.power_now:
            answer = self.runner.set_power(want)
            if not answer.get("ok"):
                o.failures[cid] = {"kind": "power limit not set", "detail": answer.get("error", "")}
                return
            self.power_now = want
        self.say(f"round {round_no}: {p.candidate.label}: starting")
        started = self.runner.start(p, max(60.0, deadline - self.clock()))
        entry = {"round": round_no, "id": cid, "load_s": started.get("load_s"), "ok": started.get("ok")}
        if not started.get("ok"):
            failure = started.get("failure") or {"kind": "failed to start", "detail": started.get("error", "")}
            o.failures[cid] = failure
            entry["failure"] = failure
            o.log.append(entry)
            self.say(f"round {round_no}: {p.candidate.label}: {failure['kind']}: {failure.get('detail', '')}")
            self.durations.append(self.clock() - started_at)
            return
        try:
            raw = self.runner.bench(started, self.bench_spec(deadline))
        finally:
            self.runner.stop(started)
        entry["seconds"] = round(self.clock() - started_at, 3)
        self.durations.append(self.clock() - started_at)
        if not raw.get("ok"):
            failure = failure_of(raw)
            o.failures[cid] = failure
            entry["failure"] = failure
            self.say(f"round {round_no}: {p.candidate.label}: {failure['kind']}: {failure['detail']}")
        else:
            o.measured.setdefault(cid, []).append(raw)
            walls = [r.get("wall_ms") or 0 for r in raw.get("runs") or []]
            self.slowest_request_s = max([self.slowest_request_s, *(w / 1000 for w in walls)])
            s = score([raw], self.settings.objective, self.settings.depth)
            entry["score"] = s.mean if s else None
            self.say(f"round {round_no}: {p.candidate.label}: {self.settings.objective} "
                     f"{s.mean:.1f}" + (f" +- {s.sd:.1f}" if s and s.sd else "") if s else
                     f"round {round_no}: {p.candidate.label}: no figure at depth {self.settings.depth}")
        o.log.append(entry)

    # --- the schedule ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        s, o = self.settings, self.outcome
        deadline = self.clock() + s.minutes * 60
        runnable = [p for p in o.prepared.values() if not p.problem]
        order = sorted(runnable, key=lambda p: (p.candidate.id != "c0", p.candidate.axis != "power"))
        try:
            self.round(1, order, deadline)
            finalists = self.finalists()
            for n in range(2, s.rounds + 1):
                if len(finalists) < 2 or self.clock() + self.estimate() > deadline:
                    break
                rotated = list(finalists)
                random.Random(n).shuffle(rotated)
                if not self.round(n, rotated, deadline):
                    break
        except KeyboardInterrupt:
            o.aborted = "interrupted"
        return o

    def round(self, n: int, order: list[Prepared], deadline: float) -> bool:
        o = self.outcome
        ran = False
        for p in order:
            if p.candidate.id in o.failures:
                continue
            if self.clock() + self.estimate() > deadline:
                self.say(f"round {n}: the time left ({max(0, deadline - self.clock()):.0f} s) is shorter than one "
                         f"measurement ({self.estimate():.0f} s): stopping")
                return False
            self.measure(p, n, deadline)
            ran = True
            if self.after is not None:
                self.after(o)
        o.rounds_run = n if ran else o.rounds_run
        return ran

    def ranked(self, objective: str):
        o, s = self.outcome, self.settings
        labels = {cid: p.candidate.label for cid, p in o.prepared.items()}
        return [r for r in rank(labels, o.measured, o.failures, o.not_run, objective, s.depth)
                if r.status == "measured"]

    def finalists(self) -> list[Prepared]:
        """The declared configuration, the kept references, the combination of every axis's best change
        and the best few by the objective (and by each of ``also_rank``), in that order, once each."""
        o, s = self.outcome, self.settings
        ranked = self.ranked(s.objective)
        best_by_axis = best_changes(ranked, {cid: p.candidate for cid, p in o.prepared.items()}, s.keep)
        ids = [cid for cid in ["c0", *s.keep] if cid in o.measured]
        if self.combine is not None and len(best_by_axis) >= 2:
            extra = self.combine(best_by_axis, len(o.prepared))
            if extra is not None:
                o.prepared[extra.candidate.id] = extra
                if extra.problem:
                    o.not_run[extra.candidate.id] = extra.problem
                else:
                    ids.append(extra.candidate.id)
        ids += [r.id for r in ranked if r.id not in ids][:s.finalists]
        for objective in s.also_rank:
            ids += [r.id for r in self.ranked(objective) if r.id not in ids][:max(1, s.finalists - 1)]
        return [o.prepared[cid] for cid in dict.fromkeys(ids)]


def best_changes(ranked, candidates: dict, references=()) -> dict:
    """Each axis's best change on the build that holds the best candidate, each better than that build's
    declaration (measured ones, best first in ``ranked``). Changes are combined on one build only, and
    judged against that build's own declaration: another build's option beats the serving build's
    declaration because of the build, not the option. The build is the one whose best candidate (a change
    or its declaration) ranks first, not the one whose declaration does: two builds' declarations may tie
    within the noise while one build's option is far ahead (2026-12-07: ik_llama.cpp's declaration at
    51.4 t/s against llama.cpp's 49.4, its run-time repack at 65.4). The build's own declaration (axis
    ``fork``) is its base, not one of its changes; ``references`` (ids measured for comparison, such as
    the fork's own fitting) are nobody's change."""
    ranked = [r for r in ranked if r.id not in references]
    scores = {r.id: r.score.mean for r in ranked}
    bases = {build_prefix(cid): cid for cid in scores if build_prefix(cid) + "c0" == cid}
    if not bases:
        return {}
    build = next(build_prefix(r.id) for r in ranked if build_prefix(r.id) in bases)
    base = scores[bases[build]]
    best: dict = {}
    for r in ranked:
        c = candidates[r.id]
        if build_prefix(r.id) != build or r.id == bases[build] or c.axis in (None, "fork"):
            continue
        if c.axis not in best and r.score.mean > base:
            best[c.axis] = c
    return best
