"""Every example is accepted; every invalid manifest is rejected with the field named."""

import pathlib
import re

import pytest
import yaml

from modelwarden.api.driftpolicy import DriftPolicy
from modelwarden.api.modeldeployment import ModelDeployment
from tests.validation import ROOT, validate_custom_resource

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "corpus" / "invalid").glob("*.yaml"))
MODELS = {"ModelDeployment": ModelDeployment, "DriftPolicy": DriftPolicy}


def documents(path: pathlib.Path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_corpus_sizes():
    assert len(INVALID) >= 30
    kinds = {documents(p)[0]["kind"] for p in INVALID}
    assert kinds == {"ModelDeployment", "DriftPolicy"}
    assert {d["kind"] for p in EXAMPLES for d in documents(p) if d["apiVersion"].startswith("modelwarden.io")} == set(MODELS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_schema_cel_and_typed_model(path):
    for doc in documents(path):
        if not doc["apiVersion"].startswith("modelwarden.io"):
            continue
        assert validate_custom_resource(doc) == []
        MODELS[doc["kind"]].model_validate(doc)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_is_rejected_naming_the_field(path):
    text = path.read_text()
    expected_field = re.search(r"^# expect: (\S+)$", text, re.M).group(1)
    errors = validate_custom_resource(yaml.safe_load(text))
    assert errors, f"{path.name} was accepted"
    assert any(error.startswith(f"{expected_field}:") for error in errors), errors
