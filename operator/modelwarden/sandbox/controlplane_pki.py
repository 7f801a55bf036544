"""The control plane's throw-away PKI, made with the ``openssl`` command line.

Apart from the process lifecycle (controlplane.py) because it is a self-contained step that runs
before any process starts: a CA, the API server's serving certificate, one client certificate per
user and the service-account key pair, all in one directory. The ``cryptography`` package is not a
dependency of the project, hence openssl.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from modelwarden.sandbox.controlplane_binaries import ControlPlaneError

# The client certificates' common names: the admin (group system:masters) and the controller manager.
ADMIN_USER = "modelwarden-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
# The API server's Service address (the first of controlplane.SERVICE_CLUSTER_IP_RANGE), named in
# its serving certificate.
SERVICE_CLUSTER_IP = "10.0.0.1"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


@dataclass
class Certificates:
    """A throw-away PKI made with the openssl command line: EC P-256 keys, valid for a week."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    def generate(self, client_users: dict[str, tuple[str, ...]]) -> None:
        """The CA, the API server's serving certificate, one client certificate per
        ``{common name: organizations}`` entry, and the service-account RSA key pair."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "7")
        _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt",
                 "-subj", "/CN=modelwarden-test-ca",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=self.directory)
        names = ("DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                 "DNS:kubernetes.default.svc.cluster.local", "IP:127.0.0.1", f"IP:{SERVICE_CLUSTER_IP}")
        self._leaf("apiserver", "/CN=kube-apiserver", "serverAuth", ec, f"subjectAltName={','.join(names)}")
        for index, (user, organizations) in enumerate(client_users.items()):
            subject = "".join(f"/O={o}" for o in organizations) + f"/CN={user}"
            self._leaf(f"client-{index}", subject, "clientAuth", ec)
        # Service-account tokens are signed with RS256 by default: an RSA pair.
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key",
                 cwd=self.directory)
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=self.directory)
        for key in self.directory.glob("*.key"):
            key.chmod(0o600)

    def _leaf(self, name: str, subject: str, usage: str, ec: tuple[str, ...], *extensions: str) -> None:
        extra = [arg for extension in extensions for arg in ("-addext", extension)]
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", subject,
                 "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-addext", "basicConstraints=critical,CA:FALSE",
                 "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "-addext", f"extendedKeyUsage={usage}", *extra, cwd=self.directory)
