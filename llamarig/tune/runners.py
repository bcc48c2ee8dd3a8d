"""Where candidates run: on a rig through its transient units (``RigRunner``), or on this machine
(``LocalRunner``, a machine without systemd such as the GPU bench machine). Both run the same rig
program's code (``rig_programs/llamarig-tune.py``: readiness, failure words) and the same bench
(``rig_programs/llamarig-bench.py``).

A runner answers: ``begin()`` (the rig's CPUs, cores and power limits), ``start(prepared, deadline_s)``,
``bench(started, spec)``, ``stop(started)``, ``set_power(limits)`` ({}: back to what begin found),
``end()`` (the rig put back and checked).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shlex

from llamarig import layout, programs
from llamarig.release.build import build_words
from llamarig.release.unit import systemd_split
from llamarig.tune.prepare import Prepared


class TuneError(Exception):
    """The tune cannot go on (said in words)."""


def load_program(name: str):
    """A rig program as a module (the local runner calls its functions)."""
    path = programs.path(name)
    spec = importlib.util.spec_from_file_location(name.replace("-", "_").removesuffix(".py"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _quote(words) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


class RigRunner:
    def __init__(self, run, service: str, expect: dict, gpus: list[int], deadline_s: float, say=print,
                 load_timeout_s: float = 600.0):
        self.run, self.service, self.expect, self.gpus, self.say = run, service, expect, gpus, say
        self.deadline_s, self.load_timeout_s = deadline_s, load_timeout_s
        self.dir = layout.TUNE_DIR
        self.program = f"{self.dir}/{programs.TUNE}"
        self.holder = None
        self.facts: dict = {}

    def spec(self, **more) -> dict:
        return {"service": self.service, "state_dir": self.dir, "prefix": layout.tune_prefix(self.service),
                "guard_unit": layout.tune_guard_unit(self.service), "declared_unit": self.expect["unit"],
                "url": self.expect["url"], "api_key_file": self.expect["api_key_file"], "gpus": self.gpus,
                "program": self.program, **more}

    def op(self, name: str, spec: dict, timeout: float) -> dict:
        status, out, err = self.run(_quote(["python3", self.program, name, json.dumps(spec, sort_keys=True)]),
                                    timeout)
        answer = _last_json(out)
        if answer is None:
            return {"ok": False, "error": f"{name} on the rig failed (exit {status}): {(err or out).strip()[-400:]}"}
        return answer

    def install(self) -> None:
        """Both programs into the rig's /run (the guard runs the tune program from there)."""
        writer = ("import base64,os,sys\nos.makedirs(sys.argv[1],mode=0o700,exist_ok=True)\n"
                  "for name,data in zip(sys.argv[2::2],sys.argv[3::2]):\n"
                  "    p=os.path.join(sys.argv[1],name)\n    open(p+'.tmp','wb').write(base64.b64decode(data))\n"
                  "    os.replace(p+'.tmp',p)\n")
        words = ["python3", "-c", writer, self.dir]
        for name in (programs.TUNE, programs.BENCH, programs.BUILD):
            words += [name, base64.b64encode(programs.path(name).read_bytes()).decode()]
        status, out, err = self.run(_quote(words), 60)
        if status != 0:
            raise TuneError(f"could not install the tune's programs in {self.dir}: {(err or out).strip()[-300:]}")

    def build(self, plan: dict, doc: dict) -> str | None:
        """Build another fork or commit into its own prefix with the deploy's build program (nothing else is
        touched: the serving prefix and the link stay); None when built (or built before), else the problem."""
        self.install()
        env = f"CCACHE_DIR={shlex.quote(doc['build_ccache_dir'])} " if doc["build_ccache_dir"] else ""
        words = ["sh", *build_words(plan, f"{self.dir}/{programs.BUILD}", doc["build_jobs"])]
        self.say(f"building {plan['key']} in {plan['prefix']} (the serving build is left as it is)")
        status, out, err = self.run(env + _quote(words) + " 2>&1", 4 * 3600,
                                    on_line=lambda line: self.say(line) if line.startswith("llamarig-build:") else None)
        if status != 0:
            return f"the build of {plan['key']} failed (exit {status}): {out.strip()[-600:]}"
        return None

    def begin(self) -> dict:
        self.install()
        stdin, stdout, stderr = self.run.open(_quote(["python3", self.program, "begin",
                                                      json.dumps(self.spec(deadline_s=self.deadline_s))]))
        line = stdout.readline()
        answer = None
        while line:
            if line.startswith("{"):
                answer = json.loads(line)
                break
            line = stdout.readline()
        if answer is None or not answer.get("ok"):
            why = (answer or {}).get("error") or stderr.read().decode("utf-8", "replace").strip()[-400:]
            raise TuneError(f"the rig refused the tune: {why}")
        self.holder = (stdin, stdout)
        self.facts = answer
        return answer

    def start(self, p: Prepared, deadline_s: float) -> dict:
        spec = {"unit": p.unit, "description": f"llamarig tune of {self.service}: {p.candidate.label}",
                "properties": p.properties, "binary": p.binary, "argv": p.argv, "deadline_s": int(deadline_s),
                "api_key_file": self.expect["api_key_file"], "load_timeout_s": self.load_timeout_s}
        answer = self.op("start", spec, self.load_timeout_s + 120)
        answer["unit"] = p.unit
        return answer

    def bench(self, started: dict, spec: dict) -> dict:
        full = {**spec, "url": started["url"], "unit": started["unit"], "api_key_file": self.expect["api_key_file"],
                "build_record": layout.BUILD_RECORD, "manifest": layout.MANIFEST}
        status, out, err = self.run(_quote(["python3", f"{self.dir}/{programs.BENCH}", "--spec-json",
                                            json.dumps(full, sort_keys=True)]), 3600 + 60,
                                    on_line=lambda line: None)
        answer = _last_json(out) or {"ok": False, "error": f"the bench failed (exit {status}): {(err or out)[-300:]}"}
        if not answer.get("ok") and not answer.get("log"):
            # the candidate's own words before it failed the measurement (a crash names its cause there)
            _, journal, _ = self.run(_quote(["journalctl", "-u", started["unit"], "-n", "80", "-o", "cat",
                                             "--no-pager"]), 60)
            answer["log"] = journal[-4000:]
        return answer

    def stop(self, started: dict) -> None:
        self.op("stop", {"unit": started["unit"]}, 120)

    def set_power(self, limits: dict) -> dict:
        want = limits or {g: v["limit"] for g, v in (self.facts.get("power") or {}).items()}
        if not want:
            return {"ok": True}
        return self.op("power", self.spec(limits=want), 120)

    def end(self) -> dict:
        answer = self.op("end", self.spec(load_timeout_s=self.load_timeout_s), self.load_timeout_s + 120)
        if self.holder is not None:
            stdin, stdout = self.holder
            try:
                stdin.close()
                stdin.channel.shutdown_write()
            except (OSError, EOFError):
                pass
            self.holder = None
        return answer


class LocalRunner:
    """Candidates as child processes of this machine, read-only towards its GPUs' settings.

    ``binary(path)`` and ``argv(words)`` map the release's rig paths (its build prefix, its model
    directory) to this machine's; ``workdir`` holds each candidate's log.
    """

    def __init__(self, workdir: str, gpus: list[int], binary=lambda b: b, argv=lambda a: a, say=print,
                 env: dict | None = None, load_timeout_s: float = 600.0):
        self.tune = load_program(programs.TUNE)
        self.benchmod = load_program(programs.BENCH)
        self.workdir, self.gpus, self.map_binary, self.map_argv, self.say = workdir, gpus, binary, argv, say
        self.env = dict(env or {})
        self.load_timeout_s = load_timeout_s
        self.count = 0
        os.makedirs(workdir, exist_ok=True)

    def begin(self) -> dict:
        return {"ok": True, "cpus": os.cpu_count(), "cores": self.tune.physical_cores(),
                "power": self.tune.power_limits(self.gpus)}

    @staticmethod
    def environment(properties: list[str]) -> dict:
        env = {}
        for prop in properties:
            if prop.startswith("Environment="):
                for word in systemd_split(prop[len("Environment="):]):
                    key, _, value = word.partition("=")
                    env[key] = value
        return env

    def start(self, p: Prepared, deadline_s: float) -> dict:
        self.count += 1
        env = self.environment(p.properties)
        env["HOME"] = self.workdir
        env.pop("CUDA_CACHE_PATH", None)
        env.update(self.env)
        spec = self.tune.with_port({"binary": self.map_binary(p.binary), "argv": self.map_argv(list(p.argv)),
                                    "env": env, "deadline_s": deadline_s,
                                    "log": os.path.join(self.workdir, f"{self.count:03d}-{p.candidate.id}.log")})
        server = self.tune.LocalServer(spec)
        answer = self.tune.run_candidate(server, spec["url"], None, self.load_timeout_s)
        answer["server"] = server
        answer["log"] = spec["log"]
        return answer

    def bench(self, started: dict, spec: dict) -> dict:
        full = dict(self.benchmod.DEFAULTS, **spec, url=started["url"], unit=None, api_key_file=None)
        try:
            return self.benchmod.measure(full)
        except self.benchmod.Refused as exc:
            error = str(exc)
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        # the end of the candidate's own output: what it said before it failed the measurement
        return {"ok": False, "error": error, "log": started["server"].log()[-2000:]}

    def stop(self, started: dict) -> None:
        started["server"].stop()

    def set_power(self, limits: dict) -> dict:
        if limits:
            return {"ok": False, "error": "the local runner never changes power limits"}
        return {"ok": True}

    def end(self) -> dict:
        return {"ok": True, "restored": None}
