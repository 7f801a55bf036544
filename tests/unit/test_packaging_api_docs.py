"""docs/api.md is generated from the typed models (`modelwarden api-docs`) and current."""

from __future__ import annotations

import re

from modelwarden.api import docs
from modelwarden.api.crdgen import build_crds
from modelwarden.api.modeldeployment import ModelDeploymentSpec
from modelwarden.commands import api_docs
from tests.generated import changed_description, run_quietly
from tests.validation import ROOT

API_MD = ROOT / "docs" / "api.md"


def check(path) -> tuple[int, str]:
    return run_quietly(api_docs, write=False, check=True, output=path)


def test_checked_in_api_reference_is_current():
    code, diff = check(API_MD)
    assert code == 0, f"docs/api.md is stale: run `modelwarden api-docs --write`\n{diff}"


def test_editing_a_field_description_makes_it_stale(tmp_path):
    path = tmp_path / "api.md"
    run_quietly(api_docs, write=True, check=False, output=path)
    assert check(path)[0] == 0
    with changed_description(ModelDeploymentSpec, "port", "A changed description."):
        code, diff = check(path)
    assert code == 1 and "+| `port` | integer (≥ 1, ≤ 65535) | `8080` | A changed description. |" in diff


def _rules(node):
    """Every CEL rule anywhere in a schema (the root's metadata.name rules too)."""
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield rule["rule"]
        for value in node.values():
            yield from _rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _rules(value)


def _schema_fields(node, found):
    for name, sub in node.get("properties", {}).items():
        found.add(name)
        _schema_fields(sub, found)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _schema_fields(node[key], found)
    return found


def test_reference_documents_every_crd_field_and_cel_rule():
    text = docs.render()
    documented = set(re.findall(r"^\| `(\w+)`", text, flags=re.MULTILINE))
    for crd in build_crds().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            missing = _schema_fields(schema["properties"][part], set()) - documented
            assert not missing, f"{crd['spec']['names']['kind']}.{part}: {missing}"
        rules = list(_rules(schema))
        assert len(rules) >= 10
        for rule in rules:
            assert f"`{rule}`" in text, rule


def test_links_resolve_to_sections():
    text = docs.render()
    anchors = {heading.lower() for heading in re.findall(r"^#{2,3} (\w+)$", text, flags=re.MULTILINE)}
    links = set(re.findall(r"\]\(#(\w+)\)", text))
    assert links and links <= anchors, links - anchors
    assert not re.search(r"`P(T)?[0-9]", text), "durations are shown as 5m, not ISO 8601"
    assert "| duration | `5m` |" in text  # CanaryStep.pause
