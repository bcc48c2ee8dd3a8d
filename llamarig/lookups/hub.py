"""Resolve a declared model against the Hugging Face Hub: commit, files, sizes, digests.

Runs on the controller before anything is downloaded, so a deploy knows the
exact files (and a dry run can show the model path) without touching a rig.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from llamarig import layout


class HubError(Exception):
    pass


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class ResolvedModel:
    repo: str
    revision: str
    commit: str
    files: list[HubFile]
    file: str  # the GGUF passed to --model
    endpoint: str = field(default="https://huggingface.co")

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


_cache: dict[tuple, ResolvedModel] = {}


def resolve_model(name: str, model: dict, endpoint: str, token: str | None = None) -> ResolvedModel:
    """Resolve one validated ``models`` entry; raises HubError with a readable reason."""
    key = (endpoint, model["repo"], model["revision"], tuple(model["include"]), model["file"], token is not None)
    if key in _cache:
        return _cache[key]
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=endpoint.rstrip("/"), token=token or False)
    try:
        info = api.model_info(model["repo"], revision=model["revision"], files_metadata=True)
    except RepositoryNotFoundError:
        raise HubError(f"model {name}: repository {model['repo']} not found on {endpoint}") from None
    except RevisionNotFoundError:
        raise HubError(f"model {name}: revision {model['revision']} not found in {model['repo']}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise HubError(f"model {name}: could not read {model['repo']} from {endpoint}: {exc}") from None
    except Exception as exc:  # the HTTP client's own errors (connection refused, timeouts, TLS)
        raise HubError(f"model {name}: could not reach {endpoint} for {model['repo']}: "
                       f"{type(exc).__name__}: {exc}") from None

    files = []
    for sibling in info.siblings or []:
        if not any(fnmatch.fnmatchcase(sibling.rfilename, pat) for pat in model["include"]):
            continue
        sha = sibling.lfs.sha256 if sibling.lfs else None
        size = sibling.lfs.size if sibling.lfs else sibling.size
        files.append(HubFile(sibling.rfilename, int(size or 0), sha))
    if not files:
        raise HubError(f"model {name}: no file of {model['repo']}@{model['revision']} matches include {model['include']}")
    paths = [f.path for f in files]
    chosen = model["file"] or layout.pick_model_file(paths)
    if chosen is None:
        ggufs = [p for p in paths if p.endswith(".gguf")]
        raise HubError(f"model {name}: include {model['include']} selects {len(ggufs)} GGUF model(s) "
                       f"({', '.join(ggufs[:4])}); narrow include or set models.{name}.file")
    missing = [p for p in layout.split_siblings(chosen) if p not in paths]
    if missing:
        raise HubError(f"model {name}: {chosen} needs {', '.join(missing)}, which include {model['include']} "
                       f"does not select or the repository lacks")
    resolved = ResolvedModel(model["repo"], model["revision"], info.sha, files, chosen, endpoint)
    _cache[key] = resolved
    return resolved
