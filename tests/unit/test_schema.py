import ast

from llamarig.hostdata.schema import SCHEMA, SERVICE_SCHEMA, MODEL_SCHEMA
from llamarig.hostdata.validate import validate_host

from .helpers import DEFAULTS, ROOT, rig


def test_group_data_all_names_exactly_the_schema_keys():
    assert set(DEFAULTS) == set(SCHEMA)


def test_every_key_is_documented_with_an_example():
    for schema in (SCHEMA, SERVICE_SCHEMA, MODEL_SCHEMA):
        for key, rule in schema.items():
            meta = rule.get("meta")
            assert meta and meta["doc"], key
            ast.literal_eval(meta["example"])  # examples are valid Python literals


def test_defaults_alone_are_a_valid_cpu_rig():
    doc, problems = validate_host("bare", dict(DEFAULTS))
    assert problems == []
    assert doc["services"] == [] and doc["gpus"] == []


def test_service_defaults_are_filled_in():
    doc, problems = validate_host("r", rig())
    assert problems == []
    svc = doc["services"][0]
    assert svc["gpus"] is None and svc["tensor_overrides"] == [] and svc["extra_args"] == []
    assert svc["sampling"] == {"temp": None, "top_p": None, "top_k": None, "min_p": None, "repeat_penalty": None}
    assert doc["models"]["gemma"]["revision"] == "main"


def test_readme_reference_matches_the_schema():
    from llamarig.hostdata.refdoc import reference

    readme = (ROOT / "README.md").read_text()
    assert reference() in readme, "README data reference is stale: run python -m llamarig.hostdata.refdoc --write"
