"""`modelwarden fetch-model s3://…` as the pods run it: a real process against a real S3 API
(moto_server on loopback, addressed through AWS_ENDPOINT_URL like MinIO or any other store)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import boto3
import joblib
import numpy as np
import pytest
import requests

from modelwarden.sandbox.processes import free_port, terminate, wait_until_ready
from modelwarden.serving.model import load_runner
from tests.fetching import empty_dest, failed_line
from tests.processes import BIN

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"
# moto accepts any key while IAM authentication is off (the default); see enforced_auth below.
ANY_KEY = {"AWS_ACCESS_KEY_ID": "modelwarden-test", "AWS_SECRET_ACCESS_KEY": "modelwarden-test-secret"}
BUCKET_NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    port = free_port()
    process = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log.open("ab"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, f"{endpoint}/moto-api/data.json", "moto_server", lambda: log.read_text()[-3000:], timeout=60)
        yield endpoint
    finally:
        terminate(process)


def client(endpoint: str, service: str = "s3", **keys: str):
    credentials = {"aws_access_key_id": ANY_KEY["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": ANY_KEY["AWS_SECRET_ACCESS_KEY"], **keys}
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, **credentials)


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    return client(s3_endpoint)


@pytest.fixture
def bucket(s3):
    name = f"models-{next(BUCKET_NUMBERS)}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    """A tiny fitted classifier, joblib-dumped (what a training job uploads)."""
    from sklearn.linear_model import LogisticRegression

    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1], [0.1, 0.8], [0.8, 0.3]])
    labels = np.array([0, 1, 0, 1, 0, 1])
    buffer = io.BytesIO()
    joblib.dump(LogisticRegression().fit(features, labels), buffer)
    return buffer.getvalue()


def fetch_model(endpoint: str, uri: str, dest: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a clean environment: only the store's variables of this test."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("AWS_", "MODEL_", "MLFLOW_", "MODELWARDEN_"))}
    return subprocess.run(
        [str(BIN), "fetch-model", uri, str(dest), *args],
        capture_output=True, text=True, timeout=120,
        env={**clean, **ANY_KEY, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION,
             "MODELWARDEN_TERMINATION_LOG": str(dest.parent / "termination-log"), **(env or {})},
    )




@pytest.fixture
def dest(tmp_path) -> Path:
    return empty_dest(tmp_path)


def test_single_object_is_saved_for_the_server_with_its_profile(s3_endpoint, s3, bucket, dest, model_bytes):
    profile = json.dumps({"features": ["a", "b"]}).encode()
    s3.put_object(Bucket=bucket, Key="fraud/7/fraud-v7.joblib", Body=model_bytes)
    s3.put_object(Bucket=bucket, Key="fraud/7/profile.json", Body=profile)
    s3.put_object(Bucket=bucket, Key="fraud/7/unrelated.txt", Body=b"not fetched with a single object")

    result = fetch_model(s3_endpoint, f"s3://{bucket}/fraud/7/fraud-v7.joblib", dest)

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["model.joblib", "profile.json"]
    assert (dest / "model.joblib").read_bytes() == model_bytes and (dest / "profile.json").read_bytes() == profile
    digest = hashlib.sha256(model_bytes).hexdigest()
    assert result.stdout.strip() == (f"fetched 2 files, {len(model_bytes) + len(profile)} bytes, "
                                     f"model file model.joblib sha256 {digest}")


def test_a_single_object_without_a_profile_is_enough(s3_endpoint, s3, bucket, dest, model_bytes):
    s3.put_object(Bucket=bucket, Key="model.pkl", Body=model_bytes)
    result = fetch_model(s3_endpoint, f"s3://{bucket}/model.pkl", dest)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in dest.iterdir()] == ["model.joblib"]


@pytest.mark.parametrize("trailing_slash", [False, True])
def test_prefix_is_fetched_as_a_directory(s3_endpoint, s3, bucket, dest, model_bytes, trailing_slash):
    layout = {"model.joblib": model_bytes, "profile.json": b"{}", "extra/metadata/signature.json": b'{"inputs": 2}'}
    for relative, body in layout.items():
        s3.put_object(Bucket=bucket, Key=f"runs/42/artifacts/{relative}", Body=body)
    s3.put_object(Bucket=bucket, Key="runs/42/artifacts/empty-folder/", Body=b"")  # a console's folder marker
    s3.put_object(Bucket=bucket, Key="runs/42/artifacts-old/model.joblib", Body=b"a sibling prefix, not under KEY/")

    uri = f"s3://{bucket}/runs/42/artifacts" + ("/" if trailing_slash else "")
    result = fetch_model(s3_endpoint, uri, dest, "--sha256", hashlib.sha256(model_bytes).hexdigest())

    assert result.returncode == 0, result.stderr
    fetched = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert fetched == layout
    assert result.stdout.startswith(f"fetched 3 files, {sum(map(len, layout.values()))} bytes, model file model.joblib ")


def test_fetched_model_loads_and_predicts(s3_endpoint, s3, bucket, dest, model_bytes):
    s3.put_object(Bucket=bucket, Key="fraud/8/model.joblib", Body=model_bytes)
    result = fetch_model(s3_endpoint, f"s3://{bucket}/fraud/8/model.joblib", dest,
                         env={"MODEL_SHA256": hashlib.sha256(model_bytes).hexdigest()})
    assert result.returncode == 0, result.stderr

    runner, path = load_runner(str(dest))
    expected = joblib.load(io.BytesIO(model_bytes)).predict(np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert path == dest / "model.joblib" and runner.task == "classification"
    assert runner.predict(np.array([[0.0, 1.0], [1.0, 0.0]])).predicted.tolist() == expected.tolist() == [0, 1]


def test_missing_key(s3_endpoint, s3, bucket, dest):
    s3.put_object(Bucket=bucket, Key="fraud/7/model.joblib", Body=b"x")
    line = failed_line(fetch_model(s3_endpoint, f"s3://{bucket}/fraud/9/model.joblib", dest), dest)
    assert line == f"fetch-model: no object or prefix s3://{bucket}/fraud/9/model.joblib"


def test_missing_bucket(s3_endpoint, dest):
    line = failed_line(fetch_model(s3_endpoint, "s3://no-such-models/fraud/7", dest), dest)
    assert "no such bucket 'no-such-models'" in line and "s3://no-such-models/fraud/7" in line


def test_checksum_mismatch(s3_endpoint, s3, bucket, dest, model_bytes):
    s3.put_object(Bucket=bucket, Key="fraud/7/model.joblib", Body=model_bytes)
    s3.put_object(Bucket=bucket, Key="fraud/7/profile.json", Body=b"{}")
    expected = hashlib.sha256(b"the model that was validated").hexdigest()
    line = failed_line(fetch_model(s3_endpoint, f"s3://{bucket}/fraud/7/model.joblib", dest, "--sha256", expected), dest)
    assert f"expected {expected}, got {hashlib.sha256(model_bytes).hexdigest()}" in line
    assert f"s3://{bucket}/fraud/7/model.joblib" in line


@pytest.mark.parametrize("key", ["big/model.joblib", "big"])
def test_oversize_artifact_is_refused(s3_endpoint, s3, bucket, dest, key):
    """The limit is over the whole artifact: three 400-byte files are too many for 1000 bytes."""
    for name in ("model.joblib", "profile.json", "notes.txt"):
        s3.put_object(Bucket=bucket, Key=f"big/{name}", Body=os.urandom(400))
    line = failed_line(fetch_model(s3_endpoint, f"s3://{bucket}/{key}", dest, "--max-bytes", "1000" if key == "big" else "100"), dest)
    assert line.endswith(f"s3://{bucket}/{key}: artifact is larger than the limit of {1000 if key == 'big' else 100} bytes")


def test_max_bytes_from_the_environment(s3_endpoint, s3, bucket, dest):
    s3.put_object(Bucket=bucket, Key="model.joblib", Body=os.urandom(64))
    line = failed_line(fetch_model(s3_endpoint, f"s3://{bucket}/model.joblib", dest, env={"MODEL_MAX_BYTES": "63"}), dest)
    assert "larger than the limit of 63 bytes" in line


@contextmanager
def enforced_auth(endpoint: str):
    """moto checks signatures and IAM policies only once told to (POST /moto-api/reset-auth with
    the number of requests still let through); restored for the module's other tests."""
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


@pytest.fixture
def reader_key(s3_endpoint, bucket):
    """An IAM user allowed to read `bucket`, made while authentication is still off."""
    iam = client(s3_endpoint, "iam")
    user = f"reader-{bucket}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read-models", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                       "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}],
    }))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


WRONG_KEYS = {
    # what is wrong -> (how the key differs from the reader's, the code S3 answers)
    "unknown key id": ({"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"}, "InvalidAccessKeyId"),
    "wrong secret": ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "SignatureDoesNotMatch"),
    "no credentials": ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "anonymous"),
}


@pytest.mark.parametrize("wrong", sorted(WRONG_KEYS))
def test_wrong_credentials_are_access_denied(s3_endpoint, s3, bucket, tmp_path, reader_key, model_bytes, wrong):
    s3.put_object(Bucket=bucket, Key="fraud/7/model.joblib", Body=model_bytes)
    uri = f"s3://{bucket}/fraud/7/model.joblib"
    change, reason = WRONG_KEYS[wrong]
    bad_key = {**reader_key, **change}
    (tmp_path / "denied" / "model").mkdir(parents=True)
    with enforced_auth(s3_endpoint):
        allowed = fetch_model(s3_endpoint, uri, tmp_path / "allowed" / "model", env=reader_key)
        denied = fetch_model(s3_endpoint, uri, tmp_path / "denied" / "model", env=bad_key)

    assert allowed.returncode == 0, allowed.stderr  # the reader's own key works: the refusal is about the key
    line = failed_line(denied, tmp_path / "denied" / "model")
    assert f"{uri}: access denied" in line and reason in line and "check the credentials" in line
    assert reader_key["AWS_SECRET_ACCESS_KEY"] not in line
    assert all(value not in line for value in change.values() if value)


def test_unreachable_endpoint(dest):
    line = failed_line(fetch_model(f"http://127.0.0.1:{free_port()}", "s3://models/fraud/7", dest), dest)
    assert "cannot connect to the store at 127.0.0.1:" in line


def test_object_names_that_would_leave_dest_are_refused(s3_endpoint, s3, bucket, tmp_path):
    """S3 keys may hold '..': a prefix download must not write outside DEST."""
    s3.put_object(Bucket=bucket, Key="evil/model.joblib", Body=b"model")
    s3.put_object(Bucket=bucket, Key="evil/../../escaped.txt", Body=b"outside")
    dest = tmp_path / "pod" / "model"
    dest.mkdir(parents=True)
    line = failed_line(fetch_model(s3_endpoint, f"s3://{bucket}/evil", dest), dest)
    assert "refusing the object name '../../escaped.txt'" in line
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))
