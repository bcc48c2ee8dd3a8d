"""What the live check of one service must find: the expectation ``llamarig-check.py`` reads.

The deploy writes it beside each unit (``layout.expectation_file``) and checks the
service with it after every start; ``llamarig verify`` sends the same expectation
to the same checker. Only what the host data decides is expected: a setting that
``extra_args`` repeat is theirs (they come last and win), and a revision not yet
resolved (a preview) is matched by the model's folder.
"""

from __future__ import annotations

import re

from llamarig import layout
from llamarig.forks.options import canonical
from llamarig.release.unit import has_api_key


def _overridden(doc: dict, svc: dict, flag: str) -> bool:
    return any(canonical(doc["build_fork"], a.split("=", 1)[0]) == flag for a in svc["extra_args"])


def expectation(doc: dict, svc: dict, model) -> dict:
    """``model``: the service's ResolvedModel (its commit may be a declared name in a preview)."""
    props: dict = {}
    if svc["ctx_size"] is not None and not _overridden(doc, svc, "--ctx-size"):
        props["n_ctx"] = svc["ctx_size"]
    if re.fullmatch(r"[0-9a-f]{40}", model.commit):
        props["model_path"] = layout.model_path(doc["models_dir"], svc["model"], model.commit, model.file)
    else:  # not resolved: any revision directory of the model, the declared file
        props["model_path"] = layout.model_dir(doc["models_dir"], svc["model"]) + "/*/" + (model.file or "*")
        props["model_path_match"] = "fnmatch"
    if svc["alias"] and not _overridden(doc, svc, "--alias"):
        props["alias"] = svc["alias"]
    if svc["parallel"] and not _overridden(doc, svc, "--parallel"):
        props["total_slots"] = svc["parallel"]
    sampling = {key: value for key, value in svc["sampling"].items()
                if value is not None and not _overridden(doc, svc, "--" + key.replace("_", "-"))}
    if sampling:
        props["sampling"] = sampling
    unit = layout.unit_name(svc["name"])
    return {
        "unit": unit,
        "url": layout.service_url(svc),
        "api_key_file": layout.api_key_file(svc["name"]) if has_api_key(svc) else None,
        "timeout_s": doc["verify_timeout_s"],
        "prompt": doc["verify_prompt"],
        "max_tokens": doc["verify_max_tokens"],
        "props": props,
    }


# Where a model's answer stops being its answer: chat-template markers a base model writes on (ChatML,
# Gemma, Llama 3, GLM, DeepSeek) and the first line break.
_ANSWER_END = re.compile(r"<\|im_end\|>|<\|im_start\|>|<end_of_turn>|<start_of_turn>|<\|eot_id\|>|"
                         r"<\|start_header_id\|>|<\|user\|>|<\|endoftext\|>|<｜end▁of▁sentence｜>|</s>|\n")


def answer_text(answer, limit: int = 120) -> str:
    """A check's answer as a person reads it: up to the first template marker or line break, spaces
    collapsed, at most ``limit`` characters."""
    text = _ANSWER_END.split(str(answer or "").strip(), 1)[0]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
