"""`modelwarden fetch-model` in-process with the file:// store: the one-line report on stdout, or
on stderr and in the termination-message file, never showing what may be secret."""

from __future__ import annotations

import pytest

from modelwarden.cli import main


@pytest.fixture
def termination_log(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("MODELWARDEN_TERMINATION_LOG", str(path))
    monkeypatch.delenv("MODEL_SHA256", raising=False)
    monkeypatch.delenv("MODEL_MAX_BYTES", raising=False)
    return path


def failure(capsys, termination_log, *argv: str) -> str:
    assert main(["fetch-model", *argv]) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("fetch-model: ")
    assert termination_log.read_text() == lines[0]
    return lines[0]


@pytest.mark.parametrize("argv, fragment", [
    (["--sha256", "abc"], "--sha256 must be 64 hexadecimal digits, not 'abc'"),
    (["--max-bytes", "10GB"], "--max-bytes must be a whole number of bytes, not '10GB'"),
    (["--max-bytes", "0"], "--max-bytes must be positive"),
])
def test_bad_limits(capsys, termination_log, tmp_path, argv, fragment):
    (tmp_path / "m.joblib").write_bytes(b"m")
    assert fragment in failure(capsys, termination_log, str(tmp_path / "m.joblib"), str(tmp_path / "dest"), *argv)


def test_invalid_uri_never_echoes_credentials_or_signature(capsys, termination_log, tmp_path):
    line = failure(capsys, termination_log, "https://alice:hunter2@models.example.com/m.joblib?X-Amz-Signature=cafe",
                   str(tmp_path / "dest"))
    assert "credentials in the URL are not allowed" in line and "models.example.com/m.joblib" in line
    assert "hunter2" not in line and "cafe" not in line


def test_success_is_one_summary_line(capsys, termination_log, tmp_path, monkeypatch):
    import hashlib

    (tmp_path / "clf.skops").write_bytes(b"skops model")
    monkeypatch.setenv("MODEL_SHA256", hashlib.sha256(b"skops model").hexdigest())
    assert main(["fetch-model", (tmp_path / "clf.skops").as_uri(), str(tmp_path / "dest")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and not termination_log.exists()
    assert captured.out == (f"fetched 1 files, 11 bytes, model file model.skops sha256 "
                            f"{hashlib.sha256(b'skops model').hexdigest()}\n")


def test_termination_log_in_a_missing_directory_is_skipped(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELWARDEN_TERMINATION_LOG", str(tmp_path / "absent" / "termination-log"))
    assert main(["fetch-model", str(tmp_path / "nothing"), str(tmp_path / "dest")]) == 1
    assert capsys.readouterr().err.startswith("fetch-model: no file or directory ")
    assert not (tmp_path / "absent").exists()
