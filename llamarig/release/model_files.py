"""Whether a model revision directory on the rig already holds exactly the resolved files, verified.

``state`` is what the rig's downloader reports of the directory (``llamarig-fetch-model.py --state``):
its manifest, and every file's size and identity (size, mtime and ctime in ns, inode).
"""

from __future__ import annotations


def expected_files(model) -> dict:
    """path -> {size, sha256} of a ResolvedModel: what the downloader must make the directory hold."""
    return {f.path: {"size": f.size, "sha256": f.sha256} for f in model.files}


def is_complete(state: dict, model) -> bool:
    manifest = state.get("manifest") or {}
    want = expected_files(model)
    recorded = manifest.get("identity") or {}
    return (
        manifest.get("repo") == model.repo
        and manifest.get("commit") == model.commit
        and manifest.get("files") == want
        and all(state.get("sizes", {}).get(path) == spec["size"] for path, spec in want.items())
        # a file written to since it was verified (a flipped byte) no longer has its recorded identity
        and all(path in recorded and recorded[path] == state.get("identity", {}).get(path) for path in want)
    )
