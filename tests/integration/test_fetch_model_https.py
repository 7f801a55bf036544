"""`modelwarden fetch-model https://…` as the pods run it: a real process against a real HTTPS
server on loopback, whose certificate a throw-away CA (the control plane's PKI helper) signed."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from modelwarden.sandbox.controlplane_pki import Certificates
from tests.fetching import empty_dest, failed_line
from tests.processes import BIN

MODEL = os.urandom(3000)
PROFILE = b'{"features": ["amount"]}'
ENDLESS_CAP_BYTES = 256 * 1024**2  # the server gives up here; the client must hang up long before
CHUNK = b"\0" * 65536


class ArtifactServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.endless_sent = 0
        self.redirect_target = ""


class ArtifactHandler(BaseHTTPRequestHandler):
    """A few routes, each a way an artifact URL can behave."""

    protocol_version = "HTTP/1.1"
    server: ArtifactServer

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        path = urlsplit(self.path).path
        if path in ("/models/fraud-v7.joblib", "/signed/fraud.joblib"):
            self._send(200, MODEL)
        elif path == "/models/profile.json":
            self._send(200, PROFILE)
        elif path == "/big.joblib":
            self._send(200, os.urandom(5000))
        elif path == "/expired.joblib":
            self._send(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
        elif path == "/endless.joblib":
            self._endless(content_length=None)
        elif path == "/understated.joblib":
            self._endless(content_length=100)
        elif path == "/to-plain-http.joblib":
            self.send_response(302)
            self.send_header("Location", self.server.redirect_target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _endless(self, content_length: int | None) -> None:
        """A body that never ends: unannounced (read until the connection closes), or announced
        smaller than it is."""
        self.send_response(200)
        if content_length is None:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(content_length))
        self.end_headers()
        self.close_connection = True
        try:
            while self.server.endless_sent < ENDLESS_CAP_BYTES:
                self.wfile.write(CHUNK)
                self.server.endless_sent += len(CHUNK)
        except OSError:  # the client hung up
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep the test output quiet
        pass


def serve(server: ArtifactServer) -> ArtifactServer:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Certificates:
    certificates = Certificates(tmp_path_factory.mktemp("pki"))
    certificates.generate({})
    return certificates


@pytest.fixture(scope="module")
def https_server(pki):
    """HTTPS on 127.0.0.1 (the certificate names it), plus a plain-http server to be redirected to."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.path("apiserver.crt"), pki.path("apiserver.key"))
    server = ArtifactServer(("127.0.0.1", 0), ArtifactHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    plain = serve(ArtifactServer(("127.0.0.1", 0), ArtifactHandler))
    server.redirect_target = f"http://127.0.0.1:{plain.server_address[1]}/models/fraud-v7.joblib"
    serve(server)
    yield server
    for running in (server, plain):
        running.shutdown()
        running.server_close()


def url(server: ArtifactServer, path: str) -> str:
    return f"https://127.0.0.1:{server.server_address[1]}{path}"


def fetch_model(uri: str, dest: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE") and not k.startswith(("MODEL_", "MODELWARDEN_"))}
    return subprocess.run(
        [str(BIN), "fetch-model", uri, str(dest), *args],
        capture_output=True, text=True, timeout=120,
        env={**clean, "MODELWARDEN_TERMINATION_LOG": str(dest.parent / "termination-log"), **(env or {})},
    )




@pytest.fixture
def dest(tmp_path) -> Path:
    return empty_dest(tmp_path)


@pytest.fixture
def trusted(pki) -> dict[str, str]:
    return {"REQUESTS_CA_BUNDLE": str(pki.path("ca.crt"))}


@pytest.mark.parametrize("ca_variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_download_with_checksum(https_server, pki, dest, ca_variable):
    digest = hashlib.sha256(MODEL).hexdigest()
    result = fetch_model(url(https_server, "/models/fraud-v7.joblib"), dest, "--sha256", digest.upper(),
                         env={ca_variable: str(pki.path("ca.crt"))})
    assert result.returncode == 0, result.stderr
    assert [p.name for p in dest.iterdir()] == ["model.joblib"] and (dest / "model.joblib").read_bytes() == MODEL
    assert result.stdout.strip() == f"fetched 1 files, {len(MODEL)} bytes, model file model.joblib sha256 {digest}"


def test_checksum_mismatch(https_server, dest, trusted):
    expected = hashlib.sha256(b"another model").hexdigest()
    line = failed_line(fetch_model(url(https_server, "/models/fraud-v7.joblib"), dest, "--sha256", expected, env=trusted), dest)
    assert f"expected {expected}, got {hashlib.sha256(MODEL).hexdigest()}" in line


def test_not_found_never_shows_the_signature(https_server, dest, trusted):
    signed = url(https_server, "/nothing.joblib") + "?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeefcafe"
    line = failed_line(fetch_model(signed, dest, env=trusted), dest)
    assert line == f"fetch-model: {url(https_server, '/nothing.joblib')}: HTTP 404 not found"


def test_expired_signature_is_access_denied(https_server, dest, trusted):
    line = failed_line(fetch_model(url(https_server, "/expired.joblib") + "?X-Amz-Signature=deadbeefcafe", dest, env=trusted), dest)
    assert "HTTP 403 access denied" in line and "deadbeefcafe" not in line


def test_announced_oversize_is_refused(https_server, dest, trusted):
    line = failed_line(fetch_model(url(https_server, "/big.joblib"), dest, "--max-bytes", "4096", env=trusted), dest)
    assert line.endswith(f"{url(https_server, '/big.joblib')}: artifact is larger than the limit of 4096 bytes")


def test_endless_unannounced_body_is_stopped_at_the_limit(https_server, dest, trusted):
    limit = 10 * 1024**2
    line = failed_line(fetch_model(url(https_server, "/endless.joblib"), dest, "--max-bytes", str(limit), env=trusted), dest)
    assert f"artifact is larger than the limit of {limit} bytes" in line
    assert https_server.endless_sent < ENDLESS_CAP_BYTES  # the client hung up; the server did not give up first


def test_understated_length_cannot_smuggle_more_bytes(https_server, dest, trusted):
    """A Content-Length smaller than the body: exactly the announced bytes are written."""
    result = fetch_model(url(https_server, "/understated.joblib"), dest, "--max-bytes", "1000", env=trusted)
    assert result.returncode == 0, result.stderr
    assert (dest / "model.joblib").stat().st_size == 100


def test_untrusted_certificate(https_server, dest):
    line = failed_line(fetch_model(url(https_server, "/models/fraud-v7.joblib"), dest), dest)
    assert "TLS verification failed" in line and "REQUESTS_CA_BUNDLE" in line


def test_redirect_to_plain_http_is_refused(https_server, dest, trusted):
    line = failed_line(fetch_model(url(https_server, "/to-plain-http.joblib"), dest, env=trusted), dest)
    assert "refusing a redirect to plain http" in line


def test_unreachable_host(dest, trusted):
    from modelwarden.sandbox.processes import free_port

    line = failed_line(fetch_model(f"https://127.0.0.1:{free_port()}/m.joblib", dest, env=trusted), dest)
    assert "cannot connect" in line


def test_https_never_imports_the_cloud_clients(https_server, tmp_path, trusted):
    """Only the chosen scheme's store is imported: an https fetch works without boto3 or google-cloud-storage."""
    probe = ("import sys; from modelwarden.cli import main; "
             f"code = main(['fetch-model', {url(https_server, '/models/fraud-v7.joblib')!r}, {str(tmp_path / 'm')!r}]); "
             "print(code, sorted(m for m in ('boto3', 'botocore', 'google.cloud.storage') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **trusted})
    assert result.stdout.splitlines()[-1] == "0 []", result.stderr
