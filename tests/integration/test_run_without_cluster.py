"""`modelwarden run` with no usable cluster says so in one line and exits 2 (no traceback, no
retrying forever); any HTTP answer from the API server counts as a cluster."""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.processes import free_port

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
users: [{{name: u, user: {{token: t}}}}]
"""


def run_operator(kubeconfig: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelwarden", "run", "-A"], capture_output=True, text=True, timeout=120,
                          env={"KUBECONFIG": kubeconfig, "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("case", ["no kubeconfig", "nothing listening"])
def test_run_without_a_cluster_is_one_line_and_exit_2(tmp_path, case):
    if case == "no kubeconfig":
        kubeconfig, expected = str(tmp_path / "missing"), "no Kubernetes credentials"
    else:
        (tmp_path / "kubeconfig").write_text(KUBECONFIG.format(server=f"http://127.0.0.1:{free_port()}"))
        kubeconfig, expected = str(tmp_path / "kubeconfig"), "no Kubernetes API server answers at http://127.0.0.1:"
    result = run_operator(kubeconfig)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"modelwarden run: {expected}"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stdout == ""


class _Forbidden(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_an_api_server_that_refuses_us_is_still_a_cluster(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "kubeconfig").write_text(KUBECONFIG.format(server=f"http://127.0.0.1:{server.server_address[1]}"))
        probe = "from modelwarden.kube.api import unreachable_cluster; print(unreachable_cluster())"
        # The kubeconfig's location is read when the client is imported: one process per case.
        answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                                env={"KUBECONFIG": str(tmp_path / "kubeconfig"), "PATH": "/usr/bin:/bin"})
        assert answer.stdout.strip() == "None", answer.stderr[-2000:]
    finally:
        server.shutdown()


def test_a_bad_log_format_in_the_environment_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "modelwarden", "run", "-A"], capture_output=True, text=True, timeout=120,
                            env={"MODELWARDEN_LOG_FORMAT": "text", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "'text' is not one of full, plain, json" in result.stderr
    assert "Traceback" not in result.stderr
