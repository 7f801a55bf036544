"""Model URIs: what parse() accepts and refuses, and what a parsed URI says about itself."""

from __future__ import annotations

import re

import pytest

from modelwarden.contract.modeluri import URI_PATTERN, InvalidModelUri, ModelUri, Scheme, concrete_model_uri, parse, printable


@pytest.mark.parametrize(
    "uri, scheme, location, path, reference",
    [
        ("/models/fraud", Scheme.LOCAL, "", "/models/fraud", ""),
        ("file:///models/fraud/model.joblib", Scheme.LOCAL, "", "/models/fraud/model.joblib", ""),
        ("file://localhost/models/a%20b", Scheme.LOCAL, "", "/models/a b", ""),
        ("pvc://model-store/fraud/7", Scheme.PVC, "model-store", "fraud/7", ""),
        ("s3://ml-models/fraud/7/model.joblib", Scheme.S3, "ml-models", "fraud/7/model.joblib", ""),
        ("s3://ml.models-2/fraud/", Scheme.S3, "ml.models-2", "fraud/", ""),
        ("gs://ml-models/fraud/7", Scheme.GCS, "ml-models", "fraud/7", ""),
        ("https://models.example.com:8443/fraud/7.joblib", Scheme.HTTPS, "models.example.com:8443", "/fraud/7.joblib", ""),
        ("models:/fraud/7", Scheme.MLFLOW_MODEL, "fraud", "", "7"),
        ("models:/fraud/Production", Scheme.MLFLOW_MODEL, "fraud", "", "Production"),
        ("models:/fraud@champion", Scheme.MLFLOW_MODEL, "fraud", "", "champion"),
        ("runs:/0a1b2c3d/model", Scheme.MLFLOW_RUN, "0a1b2c3d", "model", ""),
        ("runs:/0a1b2c3d", Scheme.MLFLOW_RUN, "0a1b2c3d", "", ""),
    ],
)
def test_accepted(uri, scheme, location, path, reference):
    parsed = parse(uri)
    assert (parsed.uri, parsed.scheme, parsed.location, parsed.path, parsed.reference) == (uri, scheme, location, path, reference)


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("", "empty"),
        (" /models/x", "whitespace"),
        ("relative/path", "unknown scheme"),
        ("file://otherhost/models", "file:///ABSOLUTE/PATH"),
        ("pvc://Not_A_Claim/x", "PersistentVolumeClaim name"),
        ("pvc://claim/../etc", "'..'"),
        ("s3://Bad_Bucket/key", "valid bucket name"),
        ("s3://ab/key", "valid bucket name"),
        ("s3://bucket", "object key or prefix"),
        ("gs://bucket/", "object key or prefix"),
        ("http://models.example.com/m.joblib", "plain http is not allowed"),
        ("https:///no-host", "needs a host"),
        ("https://user:hunter2@models.example.com/m.joblib", "credentials in the URL are not allowed"),
        ("models:/fraud", "models:/NAME/VERSION"),
        ("models:/fraud/7/extra", "models:/NAME/VERSION"),
        ("models:/fraud@", "models:/NAME/VERSION"),
        ("runs:/not a run/model", "runs:/RUN_ID/ARTIFACT_PATH"),
        ("ftp://host/model", "unknown scheme 'ftp'"),
    ],
)
def test_refused_with_the_reason(uri, fragment):
    with pytest.raises(InvalidModelUri) as refused:
        parse(uri)
    assert fragment in str(refused.value)


@pytest.mark.parametrize(
    "uri, fetched, registry, moving, registry_version",
    [
        ("/models/fraud", False, False, False, None),
        ("pvc://store/fraud", False, False, False, None),
        ("s3://ml-models/fraud/7", True, False, False, None),
        ("gs://ml-models/fraud/7", True, False, False, None),
        ("https://models.example.com/fraud.joblib", True, False, False, None),
        ("models:/fraud/7", True, True, False, "7"),
        ("models:/fraud/Staging", True, True, True, None),
        ("models:/fraud@champion", True, True, True, None),
        ("models:/fraud@7", True, True, True, None),  # an alias named "7" still moves
        ("runs:/abc123/model", True, True, False, None),
    ],
)
def test_properties(uri, fetched, registry, moving, registry_version):
    parsed = parse(uri)
    assert (parsed.fetched, parsed.registry, parsed.moving, parsed.registry_version) == (fetched, registry, moving, registry_version)


def test_concrete_model_uri_round_trips():
    uri = concrete_model_uri("fraud", "12")
    assert parse(uri) == ModelUri(uri, Scheme.MLFLOW_MODEL, location="fraud", reference="12")
    assert not parse(uri).moving


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("https://models.example.com/m.joblib?X-Amz-Signature=abc&X-Amz-Credential=AKIA", "https://models.example.com/m.joblib"),
        ("https://user:hunter2@models.example.com/m.joblib#part", "https://models.example.com/m.joblib"),
        ("s3://ml-models/fraud/7", "s3://ml-models/fraud/7"),
        ("models:/fraud@champion", "models:/fraud@champion"),
        ("/models/fraud", "/models/fraud"),
    ],
)
def test_printable_drops_what_may_be_secret(uri, shown):
    assert printable(uri) == shown
    if uri.startswith("https://") and "@" not in uri:
        assert parse(uri).printable == shown



@pytest.mark.parametrize(
    "uri",
    [
        "https://user:hunter2@models.example.com/m.joblib?sig=SECRET",
        "http://user:hunter2@models.example.com/m.joblib?sig=SECRET",
        "s3://Bad_Bucket/key?X-Amz-Signature=SECRET#hunter2",
        "ftp://user:hunter2@host/model?sig=SECRET",
        "file://user:hunter2@otherhost/models?sig=SECRET",
    ],
)
def test_refusals_never_quote_credentials_or_a_signed_query(uri):
    with pytest.raises(InvalidModelUri) as refused:
        parse(uri)
    message = str(refused.value)
    assert "hunter2" not in message and "SECRET" not in message
    assert repr(printable(uri)) in message

def test_crd_pattern_agrees_on_the_schemes():
    pattern = re.compile(URI_PATTERN)
    for uri in ("/m", "file:///m", "pvc://c/p", "s3://b/k", "gs://b/k", "https://h/p", "models:/n/1", "runs:/r/p"):
        assert pattern.match(uri), uri
    for uri in ("http://h/p", "ftp://h/p", "relative", "s3://b/k with space"):
        assert not pattern.match(uri), uri
