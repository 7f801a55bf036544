"""The CRDs are generated from the typed models, structural, documented and current."""

import pytest
import yaml

from modelwarden.api.crdgen import build_crds, render
from modelwarden.api.modeldeployment import ModelDeploymentSpec
from modelwarden.commands import crds as crds_command
from tests.generated import changed_description, run_quietly
from tests.validation import CRD_DIR, validate_builtin


def check(directory) -> tuple[int, str]:
    return run_quietly(crds_command, write=False, check=True, dir=directory)


def test_checked_in_crds_are_current():
    assert check(CRD_DIR) == (0, "")


def test_editing_a_model_field_without_regenerating_fails_the_check(tmp_path):
    run_quietly(crds_command, write=True, check=False, dir=tmp_path)
    assert check(tmp_path)[0] == 0
    with changed_description(ModelDeploymentSpec, "port", "A changed description."):
        code, diff = check(tmp_path)
    assert code == 1
    assert "+                description: A changed description." in diff


def test_missing_crd_file_fails_the_check(tmp_path):
    assert check(tmp_path)[0] == 1


@pytest.mark.parametrize("name", sorted(build_crds()))
def test_crd_is_a_valid_customresourcedefinition(name):
    crd = yaml.safe_load((CRD_DIR / name).read_text())
    assert validate_builtin(crd) == []


def walk(node, path="$"):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("name", sorted(build_crds()))
def test_schema_is_structural_and_documented(name):
    crd = build_crds()[name]
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    preserved = []
    for path, node in walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if "properties" in node:
            assert node["type"] == "object" and "additionalProperties" not in node, path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            preserved.append(path)
        if path.startswith(("$.spec.", "$.status.")) and not path.endswith("[]") and not path.endswith(".*"):
            assert node.get("description"), f"{path} has no description"
    # Only pod templates (and parts of them, and free-form metadata maps) may keep unknown fields, and
    # what another system validates when the operator hands it over: an Argo Workflow spec, an
    # Airflow run's conf, a Kubeflow run's parameters.
    handed_over = ("$.spec.actions.retrain.argoWorkflow.workflowSpec", "$.spec.actions.retrain.airflow.conf",
                   "$.spec.actions.retrain.kubeflow.parameters")
    assert all(p.endswith(("template", "metadata")) or ".template." in p or p.startswith(handed_over) for p in preserved), preserved
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["modelwarden"]
    assert crd["spec"]["names"]["shortNames"]


def test_printer_columns():
    crds = build_crds()
    md = crds["modeldeployments.modelwarden.io.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]
    dp = crds["driftpolicies.modelwarden.io.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in md if not c.get("priority")] == ["Ready", "Phase", "Stable", "Canary", "Weight", "Step", "Verdict", "SpecBehind",
                                                               "Age"]
    assert [c["name"] for c in dp] == ["Target", "Track", "Phase", "Verdict", "Failures", "Age"]


def test_cel_rules_carry_messages_naming_fields():
    text = "".join(render(crd) for crd in build_crds().values())
    docs = [yaml.safe_load(render(crd)) for crd in build_crds().values()]
    rules = [r for d in docs for _, n in walk(d["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
             for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 10, text[:200]
    for path, node in (pn for d in docs for pn in walk(d["spec"]["versions"][0]["schema"]["openAPIV3Schema"])):
        for rule in node.get("x-kubernetes-validations", []):
            message = rule["message"]
            if node["type"] in ("string", "number", "integer"):
                continue  # reported under the field's own path: "spec.interval: Invalid value: "0s": must be ..."
            # An object's rule names the field it is about: a full path, or one of its own fields.
            named = {*node.get("properties", {}), *(rule.get("fieldPath", ".").lstrip(".").split(".")[:1]),
                     path.rsplit(".", 1)[-1]} - {""}
            assert message.startswith(("spec.", "metadata.", "at least")) \
                or message.split(" ")[0].rstrip(":").split(".")[0] in named, (path, rule)


def test_durations_default_in_kubernetes_form():
    text = (CRD_DIR / "driftpolicies.modelwarden.io.yaml").read_text()
    assert "PT" not in text
    assert "default: 1m" in text and "default: 30m" in text
