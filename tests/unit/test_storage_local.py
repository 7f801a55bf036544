"""The writing side every store shares (storage/local.py) and the all-or-nothing fetch
(storage/factory.py), exercised with the file:// store on temporary directories."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelwarden.contract.modeluri import parse
from modelwarden.storage.base import FetchError, FetchLimits
from modelwarden.storage.factory import STAGING_PREFIX, fetch, store_for
from modelwarden.storage.local import Download, LocalStore, sibling_profile, single_object_name


@pytest.mark.parametrize("name, saved", [
    ("fraud/7/fraud-v7.joblib", "model.joblib"),
    ("model.PKL", "model.joblib"),
    ("clf.pickle", "model.joblib"),
    ("fraud/clf.skops", "model.skops"),
    ("fraud/weights.onnx", "weights.onnx"),
])
def test_single_object_names(name, saved):
    assert single_object_name(name) == saved


def test_sibling_profile():
    assert sibling_profile("fraud/7/m.joblib") == "fraud/7/profile.json"
    assert sibling_profile("m.joblib") == "profile.json"
    assert sibling_profile("fraud/profile.json") is None


@pytest.mark.parametrize("name", ["../up", "a/../../up", "/abs", "a//b", "./a", "", "dir/"])
def test_names_that_leave_the_destination_are_refused(tmp_path, name):
    with pytest.raises(FetchError, match="would leave the destination"):
        Download(tmp_path, FetchLimits(), "s3://b/k").write(name, [b"x"])
    assert list(tmp_path.iterdir()) == []


def test_budget_is_over_all_files_and_the_partial_file_is_removed(tmp_path):
    download = Download(tmp_path, FetchLimits(max_bytes=10), "gs://b/k")
    download.write("a", [b"123456"])
    with pytest.raises(FetchError, match="^gs://b/k: artifact is larger than the limit of 10 bytes$"):
        download.write("b", [b"123", b"456"])
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_announced_size_is_refused_before_writing(tmp_path):
    download = Download(tmp_path, FetchLimits(max_bytes=10), "https://h/m")
    with pytest.raises(FetchError, match="larger than the limit of 10 bytes"):
        download.expect(11)
    download.expect(None)  # unknown: only the written bytes count


def test_directory_model_file_is_recognised(tmp_path):
    download = Download(tmp_path, FetchLimits(), "s3://b/k")
    download.write("sub/model.joblib", [b"not the top-level one"])
    download.write("model.skops", [b"skops"])
    fetched = download.result()
    assert fetched.model_file == "model.skops" and fetched.sha256 == hashlib.sha256(b"skops").hexdigest()
    assert fetched.files == ("sub/model.joblib", "model.skops") and fetched.total_bytes == 26


@pytest.fixture
def source(tmp_path) -> Path:
    directory = tmp_path / "source"
    (directory / "extra").mkdir(parents=True)
    (directory / "model.joblib").write_bytes(b"model")
    (directory / "profile.json").write_bytes(b"{}")
    (directory / "extra" / "notes.txt").write_bytes(b"notes")
    return directory


def test_fetch_copies_a_directory_into_place(tmp_path, source):
    dest = tmp_path / "dest"
    fetched = fetch(parse(source.as_uri()), dest, FetchLimits(sha256=hashlib.sha256(b"model").hexdigest()))
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "extra", "extra/notes.txt", "model.joblib", "profile.json"]
    assert fetched.model_file == "model.joblib" and fetched.total_bytes == 12


def test_a_failed_fetch_leaves_the_destination_as_it_was(tmp_path, source):
    """A checksum mismatch after the whole download: nothing moves into place, and staging
    directories of killed fetches are cleared."""
    dest = tmp_path / "dest"
    (dest / f"{STAGING_PREFIX}killed").mkdir(parents=True)
    with pytest.raises(FetchError, match=f"sha256 mismatch for model.joblib: expected {'0' * 64}, got "):
        fetch(parse(str(source)), dest, FetchLimits(sha256="0" * 64))
    assert list(dest.iterdir()) == []


def test_single_file_is_named_for_the_server_with_its_profile(tmp_path, source):
    (source / "fraud-v7.pkl").write_bytes(b"pickled")
    dest = tmp_path / "dest"
    fetched = fetch(parse(str(source / "fraud-v7.pkl")), dest, FetchLimits())
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {"model.joblib": b"pickled", "profile.json": b"{}"}
    assert fetched.model_file == "model.joblib"


def test_sha256_needs_a_model_file(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "weights.bin").write_bytes(b"w")
    with pytest.raises(FetchError, match="no model file was recognised"):
        fetch(parse(str(tmp_path / "source")), tmp_path / "dest", FetchLimits(sha256="0" * 64))


def test_nothing_there(tmp_path):
    with pytest.raises(FetchError, match="no file or directory"):
        LocalStore().fetch(parse(str(tmp_path / "absent")), tmp_path / "dest", FetchLimits())


def test_a_claim_is_mounted_not_fetched():
    with pytest.raises(FetchError, match="mounted into the pod, not fetched"):
        store_for(parse("pvc://models/fraud"))
