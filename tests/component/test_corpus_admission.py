"""The real kube-apiserver is the authority the offline validators (tests/validation.py) imitate:
with our generated CRDs installed it refuses every manifest of the invalid corpus (422, or 400 for
an unknown field) with a message naming the field the manifest gets wrong, and accepts every
example.

One control plane serves the whole module (its CRDs never change); every request is a
server-side dry run with strict field validation, as `kubectl apply --dry-run=server` sends it,
so nothing is stored. Manifests marked `# stage: operator` are the cases only the operator can
know (PromQL it cannot parse, a cron schedule that never fires): the API server accepts them and
the typed model refuses them naming the field (the operator's InvalidSpec condition).
"""

from __future__ import annotations

import pytest
import yaml

from tests.realcluster import Cluster
from tests.unit.test_corpus import EXAMPLES, INVALID, documents, expectation, model_errors

PLURALS = {"ModelDeployment": "modeldeployments", "DriftPolicy": "driftpolicies"}


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    started = Cluster(tmp_path_factory.mktemp("corpus-cluster")).start()
    try:
        yield started
    finally:
        started.stop()


def dry_run_create(cluster: Cluster, doc: dict) -> tuple[int, str]:
    """POST the object as a server-side dry run with strict field validation: (status, message)."""
    namespace = doc["metadata"].get("namespace", "default")
    url = f"{cluster.url}/apis/{doc['apiVersion']}/namespaces/{namespace}/{PLURALS[doc['kind']]}"
    response = cluster.kube.session.post(url, json=doc, params={"dryRun": "All", "fieldValidation": "Strict"}, timeout=30)
    body = response.json()
    return response.status_code, body.get("message", "") if body.get("kind") == "Status" else ""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted(apiserver, path):
    for doc in documents(path):
        status, message = dry_run_create(apiserver, doc)
        assert status == 201, f"{path.name}: {status} {message}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_is_refused_naming_the_field(apiserver, path):
    expected_field, operator_only = expectation(path)
    doc = yaml.safe_load(path.read_text())
    status, message = dry_run_create(apiserver, doc)
    if operator_only:
        assert status == 201, f"{path.name} is marked `stage: operator` but the API server refused it: {message}"
        errors = model_errors(doc)
        assert any(error.startswith(f"{expected_field}:") for error in errors), errors
        return
    # Invalid values are 422 Invalid; an unknown field under strict field validation is refused
    # while decoding, before validation: 400 BadRequest "strict decoding error: unknown field".
    refused = status == 422 or (status == 400 and "strict decoding error: unknown field" in message)
    assert refused, f"{path.name} was not refused: {status} {message}"
    assert expected_field in message, f"{path.name}: the API server's message does not name {expected_field}: {message}"
