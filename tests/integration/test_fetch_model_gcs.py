"""`modelwarden fetch-model gs://…` as the pods run it: a real process against a real Cloud Storage
API emulator (fake-gcs-server, built by `make gcs-emulator`), found through STORAGE_EMULATOR_HOST."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from pathlib import Path

import pytest

from modelwarden.sandbox.processes import free_port, terminate, wait_until_ready
from tests.fetching import empty_dest, failed_line
from tests.conftest import IN_CI, ROOT
from tests.processes import BIN

GCS_EMULATOR = ROOT / ".tools" / "bin" / "fake-gcs-server"
BUCKET_NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def gcs_endpoint(tmp_path_factory):
    if not os.access(GCS_EMULATOR, os.X_OK):
        message = f"{GCS_EMULATOR} is not built (make gcs-emulator; make test builds it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    log = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs-server.log"
    port = free_port()
    process = subprocess.Popen(
        [str(GCS_EMULATOR), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
         "-log-level", "warn"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, f"{endpoint}/storage/v1/b", "fake-gcs-server", lambda: log.read_text()[-3000:], timeout=60)
        yield endpoint
    finally:
        terminate(process)


@pytest.fixture(scope="module")
def gcs(gcs_endpoint):
    """An uploading client that finds the emulator the way the command does."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
        return storage.Client(project="modelwarden-test", credentials=AnonymousCredentials())


@pytest.fixture
def bucket(gcs):
    return gcs.create_bucket(f"models-{next(BUCKET_NUMBERS)}")


@pytest.fixture
def dest(tmp_path) -> Path:
    return empty_dest(tmp_path)


def fetch_model(endpoint: str, uri: str, dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("GOOGLE_", "CLOUDSDK_", "MODEL_", "MODELWARDEN_")) and k != "STORAGE_EMULATOR_HOST"}
    return subprocess.run(
        [str(BIN), "fetch-model", uri, str(dest), *args],
        capture_output=True, text=True, timeout=120,
        env={**clean, "STORAGE_EMULATOR_HOST": endpoint,
             # named but absent, as when the store Secret has no key file: the emulator needs none
             "GOOGLE_APPLICATION_CREDENTIALS": str(dest.parent / "no-such-key.json"),
             "MODELWARDEN_TERMINATION_LOG": str(dest.parent / "termination-log")},
    )




def test_single_object_with_its_profile(gcs_endpoint, bucket, dest):
    model, profile = os.urandom(2048), b'{"features": ["amount"]}'
    bucket.blob("fraud/7/fraud-v7.skops").upload_from_string(model)
    bucket.blob("fraud/7/profile.json").upload_from_string(profile)
    bucket.blob("fraud/7/other.txt").upload_from_string(b"not fetched with a single object")
    digest = hashlib.sha256(model).hexdigest()

    result = fetch_model(gcs_endpoint, f"gs://{bucket.name}/fraud/7/fraud-v7.skops", dest, "--sha256", digest)

    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {"model.skops": model, "profile.json": profile}
    assert result.stdout.strip() == (f"fetched 2 files, {len(model) + len(profile)} bytes, "
                                     f"model file model.skops sha256 {digest}")


def test_prefix_is_fetched_as_a_directory(gcs_endpoint, bucket, dest):
    layout = {"model.joblib": os.urandom(1500), "profile.json": b"{}", "metadata/MLmodel": b"flavors: {}"}
    for relative, body in layout.items():
        bucket.blob(f"fraud/8/{relative}").upload_from_string(body)
    bucket.blob("fraud/80/model.joblib").upload_from_string(b"a sibling prefix, not under KEY/")

    result = fetch_model(gcs_endpoint, f"gs://{bucket.name}/fraud/8", dest)

    assert result.returncode == 0, result.stderr
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == layout
    digest = hashlib.sha256(layout["model.joblib"]).hexdigest()
    assert result.stdout.strip().endswith(f"model file model.joblib sha256 {digest}")


def test_missing_key(gcs_endpoint, bucket, dest):
    bucket.blob("fraud/7/model.joblib").upload_from_string(b"x")
    line = failed_line(fetch_model(gcs_endpoint, f"gs://{bucket.name}/fraud/9", dest), dest)
    assert line == f"fetch-model: no object or prefix gs://{bucket.name}/fraud/9"


def test_missing_bucket(gcs_endpoint, dest):
    line = failed_line(fetch_model(gcs_endpoint, "gs://no-such-models/fraud/7", dest), dest)
    assert line == "fetch-model: gs://no-such-models/fraud/7: no such bucket 'no-such-models'"


def test_oversize_artifact_is_refused(gcs_endpoint, bucket, dest):
    for name in ("model.joblib", "profile.json"):
        bucket.blob(f"big/{name}").upload_from_string(os.urandom(600))
    line = failed_line(fetch_model(gcs_endpoint, f"gs://{bucket.name}/big", dest, "--max-bytes", "1000"), dest)
    assert line.endswith(f"gs://{bucket.name}/big: artifact is larger than the limit of 1000 bytes")
