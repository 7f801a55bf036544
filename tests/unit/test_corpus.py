"""Every example is accepted; every invalid manifest is rejected with the field named.

A manifest of the invalid corpus says which field it gets wrong (`# expect: <path>`). Most are
refused at admission (schema and CEL rules, checked here offline and in
tests/component/test_corpus_admission.py by the real API server); those marked `# stage:
operator` are what only the operator can know (a PromQL query it cannot parse, a cron schedule
that never fires): the API server accepts them and the typed model refuses them naming the same
field, which the operator reports as condition InvalidSpec.
"""

import pathlib
import re

import pytest
import yaml
from pydantic import ValidationError

from modelwarden.api.driftpolicy import DriftPolicy
from modelwarden.api.modeldeployment import ModelDeployment
from tests.validation import ROOT, validate_custom_resource

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "corpus" / "invalid").glob("*.yaml"))
MODELS = {"ModelDeployment": ModelDeployment, "DriftPolicy": DriftPolicy}


def documents(path: pathlib.Path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def expectation(path: pathlib.Path) -> tuple[str, bool]:
    """(the field the manifest gets wrong, whether only the operator can tell)."""
    text = path.read_text()
    return re.search(r"^# expect: (\S+)$", text, re.M).group(1), bool(re.search(r"^# stage: operator\b", text, re.M))


def model_errors(doc) -> list[str]:
    """The typed model's errors as `spec.checks[0].query: message` lines (empty when valid)."""
    try:
        MODELS[doc["kind"]].model_validate(doc)
    except ValidationError as exc:
        return [re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", ".".join(map(str, e["loc"]))) + f": {e['msg']}" for e in exc.errors()]
    return []


def test_corpus_sizes():
    assert len(INVALID) >= 117
    kinds = {documents(p)[0]["kind"] for p in INVALID}
    assert kinds == {"ModelDeployment", "DriftPolicy"}
    assert {d["kind"] for p in EXAMPLES for d in documents(p) if d["apiVersion"].startswith("modelwarden.io")} == set(MODELS)
    # One manifest per file, numbered without gaps, names unique.
    assert all(len(documents(p)) == 1 for p in INVALID)
    assert sorted(int(p.name.split("-")[0]) for p in INVALID) == list(range(1, len(INVALID) + 1))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_schema_cel_and_typed_model(path):
    for doc in documents(path):
        if not doc["apiVersion"].startswith("modelwarden.io"):
            continue
        assert validate_custom_resource(doc) == []
        assert model_errors(doc) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_is_rejected_naming_the_field(path):
    expected_field, operator_only = expectation(path)
    doc = yaml.safe_load(path.read_text())
    errors = validate_custom_resource(doc)
    if operator_only:
        assert errors == [], f"{path.name} is marked `stage: operator` but admission already refuses it"
        errors = model_errors(doc)
    assert errors, f"{path.name} was accepted"
    assert any(error.startswith(f"{expected_field}:") for error in errors), errors

