"""llama.cpp as the planner's oracle: its own sizing of the KV cache and the recurrent state, read from the
pinned tree's code on header-only files.

A container rig that has built llama.cpp keeps its CMake build tree (``/opt/llamarig/build/KEY``); in it
this module builds, through ``chroot`` into the rig's root (its compiler, its libraries):

- ``llama-fit-params`` (the tree's own target: a few seconds on top of the rig's build, shared ccache);
- ``kv-oracle`` (``testbed/kv_oracle.cpp``), a 60-line program on the same tree's static libraries
  that does what ``llama-fit-params`` does to size memory -- loads the file with ``no_alloc`` (no tensor data
  read), creates the context -- and prints llama.cpp's figures in bytes. It exists because
  ``llama-fit-params`` logs through an asynchronous logger that loses the loader's last error when it aborts,
  and prints whole MiB.

A header-only file needs every tensor the architecture's loader asks for, with the shape it expects.
``complete()`` finds them from the loader itself: it writes the header (data a sparse hole), runs
``kv-oracle``, and adds the tensor the loader says is missing, or takes the shape it says it expected,
until the file loads. Nothing about an architecture's tensors is written by hand, so any architecture
the tree loads can be checked from its hyperparameters alone.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed import synth

HERE = Path(__file__).parent
MISSING = re.compile(r"missing tensor '([^']+)'|tensor '([^']+)' not found")
SHAPE = re.compile(r"tensor '([^']+)' has wrong shape; expected ([\d, ]+), got")
KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\)")
RS_LINE = re.compile(r"llama_memory_recurrent: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers")
IK_KV_LINE = re.compile(r"KV self size += +([\d.]+) MiB")
IK_BUFFER_LINE = re.compile(r"llama_kv_cache_init: +\S+ KV buffer size = +([\d.]+) MiB")


SOURCE = HERE / "kv_oracle.cpp"


@dataclass(frozen=True)
class Fork:
    defines: tuple[str, ...]    # for kv_oracle.cpp
    libs: tuple[str, ...]       # the build tree's static libraries it links
    memory_done: str            # printed once every memory of the context exists, before the compute graphs
    fit_params: bool            # the tree has llama-fit-params


FORKS = {
    "llama.cpp": Fork((), ("src/libllama.a", "ggml/src/libggml.a", "ggml/src/libggml-cpu.a",
                                        "ggml/src/libggml-base.a"), "sched_reserve: reserving", True),
    # ik sizes the cache in llama_kv_cache_init and logs it before the output buffer (src/llama.cpp)
    "ik_llama.cpp": Fork(("-DLLAMARIG_IK",), ("src/libllama.a", "ggml/src/libggml.a"), "output buffer size", False),
}
BREAKDOWN = re.compile(r"^breakdown (\S+) (\d+) (\d+) (\d+)$", re.M)


class OracleError(Exception):
    pass


@dataclass(frozen=True)
class Case:
    """One context the server could be started with (kv-oracle's arguments)."""
    ctx: int = 4096
    seqs: int = 1
    cache_k: str = "f16"
    cache_v: str = "f16"
    ubatch: int = 512
    batch: int = 2048
    flash_attn: bool = True
    swa_full: bool = False
    kv_unified: bool = False
    mla: int = 3                # ik_llama.cpp's -mla

    def words(self, fork: str) -> list[str]:
        common = [str(self.ctx), str(self.seqs), self.cache_k, self.cache_v, str(self.ubatch), str(self.batch),
                  str(int(self.flash_attn))]
        if fork == "ik_llama.cpp":
            return common + [str(self.mla)]
        return common + [str(int(self.swa_full)), str(int(self.kv_unified))]


@dataclass
class Sizing:
    """llama.cpp's figures for one file and case."""
    kv_mib: float             # every KV cache's "size =" line (two decimals)
    kv_layers: int            # layers those caches hold
    kv_caches: int            # how many caches (an interleaved sliding-window model has two)
    state_mib: float          # the recurrent memory's "size =" line
    state_layers: int
    context_bytes: int | None  # llama_get_memory_breakdown's context (KV + recurrent state), exact
    log: str


class Oracle:
    """kv-oracle (and llama-fit-params) built in a rig's build tree of ``fork``, run through chroot."""

    def __init__(self, root: Path, fork: str = "llama.cpp"):
        self.root, self.fork, self.spec = Path(root), fork, FORKS[fork]
        trees = sorted(p for p in (self.root / "opt/llamarig/build").glob(f"{fork}-*")
                       if (p / "src/libllama.a").is_file())
        if not trees:
            raise OracleError(f"no {fork} build tree with src/libllama.a under {self.root}/opt/llamarig/build")
        self.build = "/" + str(trees[-1].relative_to(self.root))
        cache = (trees[-1] / "CMakeCache.txt").read_text()
        self.work = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", cache, re.M).group(1)
        self.dir = "/tmp/llamarig-oracle"
        (self.root / self.dir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self.exe = f"{self.dir}/kv-oracle"
        self.fit_params = f"{self.build}/bin/llama-fit-params"

    def chroot(self, *words: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(self.root), *words], capture_output=True, text=True, timeout=timeout)

    def compile(self) -> None:
        (self.root / self.dir.lstrip("/") / SOURCE.name).write_text(SOURCE.read_text())
        b, w = self.build, self.work
        done = self.chroot("c++", "-O1", "-std=c++17", *self.spec.defines, f"-I{w}/include", f"-I{w}/ggml/include",
                           f"-I{w}/src", f"{self.dir}/{SOURCE.name}", "-o", self.exe, *(f"{b}/{lib}" for lib in self.spec.libs),
                           "-ldl", "-lm", "-lgomp", "-lpthread")
        if done.returncode:
            raise OracleError(f"kv-oracle did not build from {self.fork}'s tree:\n{done.stderr[-3000:]}")
        if not self.spec.fit_params:
            return
        built = self.chroot("env", "CCACHE_DIR=/var/cache/ccache", "cmake", "--build", b, "--target",
                            "llama-fit-params", "-j2")
        if built.returncode:
            raise OracleError(f"llama-fit-params did not build:\n{(built.stdout + built.stderr)[-3000:]}")

    def host_path(self, name: str) -> Path:
        return self.root / self.dir.lstrip("/") / name

    def run(self, name: str, case: Case) -> subprocess.CompletedProcess:
        return self.chroot(self.exe, f"{self.dir}/{name}", *case.words(self.fork), timeout=120)

    def complete(self, name: str, meta: dict, seed: tuple[str, ...] = (), case: Case = Case(),
                 limit: int = 3000) -> list:
        """The tensors (name, shape, type) a file of ``meta`` needs to load, as the loader asks for them;
        writes the file as ``name`` in the oracle's directory. ``seed``: tensors to start from, for loaders
        that read a missing one as a kind of file (glm4moe without ``blk.0.attn_norm`` is a next-token-only
        file whose trunk is optional)."""
        rows: list = [(n, (1,), "F32") for n in seed]
        for _ in range(limit):
            synth.write_gguf(str(self.host_path(name)), meta, rows)
            done = self.run(name, case)
            if done.returncode == 0 or self.spec.memory_done in done.stderr:
                return rows
            missing, shape = MISSING.search(done.stderr), SHAPE.search(done.stderr)
            if missing:
                rows.append((missing.group(1) or missing.group(2), (1,), "F32"))
            elif shape:
                want = tuple(int(x) for x in shape.group(2).split(","))
                rows = [(n, want if n == shape.group(1) else s, t) for n, s, t in rows]
            else:
                raise OracleError(f"{meta.get('general.architecture')}: the loader stopped on something else than "
                                  f"a tensor (exit {done.returncode}):\n{_tail(done.stderr)}")
        raise OracleError(f"{meta.get('general.architecture')}: no complete tensor set after {limit} tries")

    def sizing(self, name: str, case: Case) -> Sizing:
        done = self.run(name, case)
        if self.spec.memory_done not in done.stderr:
            raise OracleError(f"{name} {case}: kv-oracle failed (exit {done.returncode}):\n{_tail(done.stderr)}")
        if self.fork == "ik_llama.cpp":
            # "KV self size" counts K and V; the cache's buffers also hold the delta-net layers' state
            kv_mib = sum(float(m) for m in IK_KV_LINE.findall(done.stderr))
            buffers = sum(float(m) for m in IK_BUFFER_LINE.findall(done.stderr))
            return Sizing(kv_mib=kv_mib, kv_layers=-1, kv_caches=1, state_mib=round(buffers - kv_mib, 2),
                          state_layers=-1, context_bytes=None, log=done.stderr)
        kv = KV_LINE.findall(done.stderr)
        rs = RS_LINE.findall(done.stderr)
        # the breakdown comes after the compute graphs, which some architectures' graphs do not survive on
        # stand-in tensors (the memory is sized before them): None then
        context = sum(int(m[2]) for m in BREAKDOWN.findall(done.stdout)) if done.returncode == 0 else None
        return Sizing(kv_mib=sum(float(m[0]) for m in kv), kv_layers=sum(int(m[2]) for m in kv), kv_caches=len(kv),
                      state_mib=sum(float(m[0]) for m in rs), state_layers=sum(int(m[2]) for m in rs),
                      context_bytes=context, log=done.stderr)

    def fit_params_context_mib(self, name: str, case: Case) -> int:
        """llama-fit-params --fit-print's context column (whole MiB) summed over its rows."""
        words = ["-m", f"{self.dir}/{name}", "--fit-print", "on", "-c", str(case.ctx), "-np", str(case.seqs),
                 "-ctk", case.cache_k, "-ctv", case.cache_v, "-ub", str(case.ubatch), "-b", str(case.batch),
                 "-fa", "on" if case.flash_attn else "off"] + (["--swa-full"] if case.swa_full else [])
        done = self.chroot(self.fit_params, *words, timeout=120)
        if done.returncode:
            raise OracleError(f"llama-fit-params {' '.join(words)} failed:\n{_tail(done.stderr)}")
        rows = [line.split() for line in done.stdout.splitlines() if len(line.split()) == 4]
        if not rows:
            raise OracleError(f"llama-fit-params printed no memory rows:\n{done.stdout[-2000:]}")
        return sum(int(r[2]) for r in rows)


def _tail(text: str, n: int = 3000) -> str:
    keep = [line for line in text.splitlines() if not line.startswith(("llama_model_loader: -", "load: control"))]
    return "\n".join(keep)[-n:]
