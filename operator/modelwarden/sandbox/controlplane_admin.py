"""What an admin does with a running control plane: install CRDs, create namespaces, write
kubeconfigs (the admin's client certificate, or a ServiceAccount's TokenRequest token).

ControlPlane (controlplane.py) mixes this in; it is apart from the process lifecycle because it
only talks to the API server over HTTP (``requests`` with the admin's client certificate) through
``self.session()``, ``self.url``, ``self.ca_path``, ``self.certs`` and ``self.workdir``.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from modelwarden.sandbox.controlplane_binaries import ControlPlaneError
from modelwarden.sandbox.controlplane_pki import ADMIN_USER


def crd_documents(*directories: Path) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in the YAML files of some directories, in file-name order."""
    return [doc for directory in directories for path in sorted(Path(directory).glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "CustomResourceDefinition"]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ControlPlaneAdmin:
    """CRDs, namespaces, kubeconfigs and ServiceAccount tokens of a started ControlPlane."""

    def install_crds(self, crds: list[dict[str, Any]], timeout: float = 60.0) -> list[str]:
        """Create CustomResourceDefinitions (as the admin) and wait until all are Established."""
        session = self.session()
        api = f"{self.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        names = []
        deadline = time.monotonic() + timeout
        for crd in crds:
            while True:  # a just-ready API server may still answer 5xx/429 for a moment
                try:
                    response = session.post(api, json=crd, timeout=30)
                except requests.RequestException as error:
                    response, problem = None, str(error)
                else:
                    problem = f"{response.status_code} {response.text[:300]}"
                if response is not None and (response.ok or response.status_code == 409):
                    break
                if (response is not None and response.status_code < 500 and response.status_code != 429) \
                        or time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRD {crd['metadata']['name']}: {problem}")
                time.sleep(0.2)
            names.append(crd["metadata"]["name"])
        for name in names:
            while not any(c["type"] == "Established" and c["status"] == "True"
                          for c in self._crd_conditions(session, f"{api}/{name}")):
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRD {name} not Established within {timeout}s")
                time.sleep(0.05)
        return names

    @staticmethod
    def _crd_conditions(session: requests.Session, url: str) -> list[dict[str, Any]]:
        response = session.get(url, timeout=10)
        if not response.ok:
            return []  # not there yet (or a transient error): asked again until the deadline
        return (response.json().get("status") or {}).get("conditions") or []  # null right after creation

    def create_namespace(self, name: str) -> None:
        response = self.session().post(f"{self.url}/api/v1/namespaces", timeout=30,
                                       json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        if not response.ok and response.status_code != 409:
            raise ControlPlaneError(f"namespace {name}: {response.status_code} {response.text[:300]}")

    # -- kubeconfigs and ServiceAccount tokens -------------------------------------------------

    def _kubeconfig(self, user: str, credentials: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "modelwarden-test", "cluster": {
                "server": self.url, "certificate-authority-data": _b64(self.ca_path)}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": user, "context": {"cluster": "modelwarden-test", "user": user}}],
            "current-context": user,
        }

    def write_kubeconfig(self, path: Path, user: str = ADMIN_USER, client_index: int = 0) -> Path:
        """A kubeconfig with one of the generated client certificates embedded."""
        credentials = {
            "client-certificate-data": _b64(self.certs.path(f"client-{client_index}.crt")),
            "client-key-data": _b64(self.certs.path(f"client-{client_index}.key")),
        }
        return self._write(path, self._kubeconfig(user, credentials))

    @staticmethod
    def _write(path: Path, config: dict[str, Any]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def service_account_token(self, namespace: str, name: str, expiration_seconds: int = 3600,
                              audiences: list[str] | None = None) -> str:
        """A bound token for an existing ServiceAccount (TokenRequest API, as the admin)."""
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = audiences
        response = self.session().post(
            f"{self.url}/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            timeout=10,
        )
        if not response.ok:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name}: {response.status_code} {response.text}")
        return response.json()["status"]["token"]

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path | None = None,
                                   expiration_seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as ``system:serviceaccount:NAMESPACE:NAME`` (the
        ServiceAccount must exist), so a process gets only the RBAC that account has."""
        token = self.service_account_token(namespace, name, expiration_seconds)
        user = f"system:serviceaccount:{namespace}:{name}"
        path = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        config = self._kubeconfig(user, {"token": token})
        config["contexts"][0]["context"]["namespace"] = namespace
        return self._write(path, config)
