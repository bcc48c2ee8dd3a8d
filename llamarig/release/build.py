"""CMake arguments of a rig's build, per fork, and the name of the build they make."""

from __future__ import annotations

from llamarig import layout

# Options every build gets, per fork: static binaries (no RUNPATH to break when
# a prefix moves), no tests or examples beyond the requested targets.
BASE_OPTIONS = {
    "llama.cpp": ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF"],
    "ik_llama.cpp": ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF"],
}

CCACHE_OPTIONS = ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
                  "-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache"]


def cuda_architectures(declared, compute_caps: list[str]) -> list[str]:
    """``declared`` (``auto`` or a list) as CMake architectures; ``auto`` reads nvidia-smi's compute_cap ("8.6" -> "86")."""
    if declared != "auto":
        return [str(a) for a in declared]
    return sorted({cap.replace(".", "") for cap in compute_caps if cap})


RPC_OPTION = "-DGGML_RPC=ON"
RPC_TARGET = "rpc-server|ggml-rpc-server"  # llama.cpp's name, whichever the tree has (2026: ggml-rpc-server);
                                           # installed as bin/rpc-server (rig_programs/llamarig-build.sh)


def uses_rpc(doc: dict) -> bool:
    """A rig that lends devices (rpc_servers) or whose services use another's (rpc_workers)."""
    return bool(doc.get("rpc_servers")) or any(s.get("rpc_workers") for s in doc["services"])


def cmake_args(doc: dict, cuda: bool, archs: list[str]) -> list[str]:
    """Arguments that decide what gets built (the build key hashes them)."""
    args = list(BASE_OPTIONS[doc["build_fork"]])
    if cuda:
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}"]
    if uses_rpc(doc) and RPC_OPTION not in doc["build_cmake_options"]:
        args.append(RPC_OPTION)  # llama.cpp's RPC backend, in llama-server and rpc-server alike
    args += doc["build_cmake_options"]
    return args


def targets(doc: dict) -> list[str]:
    """The CMake targets: the declared ones, and rpc-server on every rig that uses RPC (main rigs too, so that
    a worker and its main rig of the same options are one build, made once, in the shared ccache)."""
    out = list(doc["build_targets"])
    if uses_rpc(doc) and RPC_TARGET not in out:
        out.append(RPC_TARGET)
    return out


def launcher_args(doc: dict) -> list[str]:
    """Arguments that change how, not what, is built (left out of the build key)."""
    return list(CCACHE_OPTIONS) if doc["build_ccache_dir"] else []


def build_words(plan: dict, script: str, jobs: int | None) -> list:
    """The build program's arguments for ``plan`` (``rig_programs/llamarig-build.sh``'s usage line)."""
    return [script, plan["src"], plan["url"], plan["commit"], plan["work"], plan["build_dir"], plan["prefix"],
            jobs or 0, " ".join(plan["targets"]), layout.BUILD_RECORD, plan["record"], "--", *plan["cmake_args"]]


def build_plan(doc: dict, commit: str, cuda: bool, archs: list[str]) -> dict:
    """Everything the build task needs: key, paths, arguments."""
    root, fork = doc["build_root"], doc["build_fork"]
    args = cmake_args(doc, cuda, archs)
    key = layout.build_key(fork, commit, args, targets(doc))
    return {
        "key": key,
        "commit": commit,
        "cmake_args": args + launcher_args(doc),
        "src": layout.source_dir(root, fork),
        "work": layout.worktree_dir(root, fork, commit),
        "build_dir": layout.build_dir(root, key),
        "prefix": layout.prefix_dir(root, key),
        "link": layout.current_link(root, fork),
        "targets": targets(doc),
    }
