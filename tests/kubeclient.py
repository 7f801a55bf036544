"""A minimal Kubernetes REST client for tests (no kubernetes package): plain HTTP against the
emulator, or a requests session with the admin's client certificate against a real control plane."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from modelwarden.contract.kubernetes import API_VERSION

CORE = {"pods", "services", "configmaps", "secrets", "events", "namespaces", "serviceaccounts"}
APPS = {"deployments", "replicasets"}
BATCH = {"jobs", "cronjobs"}
AUTOSCALING = {"horizontalpodautoscalers"}
OURS = {"modeldeployments", "driftpolicies"}


def collection_path(plural: str, namespace: str | None, api_version: str | None = None) -> str:
    if api_version:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    elif plural in CORE:
        prefix = "/api/v1"
    elif plural in APPS:
        prefix = "/apis/apps/v1"
    elif plural in BATCH:
        prefix = "/apis/batch/v1"
    elif plural in AUTOSCALING:
        prefix = "/apis/autoscaling/v2"
    elif plural in OURS:
        prefix = f"/apis/{API_VERSION}"
    else:
        raise ValueError(f"say the apiVersion of {plural}")
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


class KubeClient:
    def __init__(self, url: str, session: requests.Session | None = None) -> None:
        self.url = url
        self.session = session or requests.Session()

    def _check(self, response: requests.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise requests.HTTPError(f"{response.status_code}: {response.text[:500]}", response=response)
        return response.json()

    def create(self, plural: str, body: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        namespace = body.get("metadata", {}).get("namespace", namespace)
        api_version = body.get("apiVersion")
        return self._check(self.session.post(self.url + collection_path(plural, namespace, api_version), json=body))

    def get(self, plural: str, name: str, namespace: str = "default", api_version: str | None = None) -> dict[str, Any] | None:
        response = self.session.get(f"{self.url}{collection_path(plural, namespace, api_version)}/{name}")
        return None if response.status_code == 404 else self._check(response)

    def list(self, plural: str, namespace: str | None = "default", api_version: str | None = None, **params: str) -> list[dict[str, Any]]:
        return self._check(self.session.get(self.url + collection_path(plural, namespace, api_version), params=params))["items"]

    def patch(
        self, plural: str, name: str, body: Any, namespace: str = "default", subresource: str | None = None,
        api_version: str | None = None, content_type: str = "application/merge-patch+json",
    ) -> dict[str, Any]:
        url = f"{self.url}{collection_path(plural, namespace, api_version)}/{name}" + (f"/{subresource}" if subresource else "")
        return self._check(self.session.patch(url, json=body, headers={"Content-Type": content_type}))

    def delete(self, plural: str, name: str, namespace: str = "default", api_version: str | None = None) -> None:
        self.session.delete(f"{self.url}{collection_path(plural, namespace, api_version)}/{name}")

    def wait_for(
        self, plural: str, name: str, predicate: Callable[[dict[str, Any]], bool], namespace: str = "default",
        timeout: float = 60.0, api_version: str | None = None,
    ) -> dict[str, Any]:
        """Poll an object until the predicate holds; fail with the last state seen."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.get(plural, name, namespace, api_version)
            if last is not None and predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"{plural}/{name} did not reach the expected state in {timeout}s; last: {last}")

    def wait_gone(self, plural: str, name: str, namespace: str = "default", timeout: float = 60.0) -> None:
        """Poll until the object no longer exists."""
        deadline = time.monotonic() + timeout
        while (last := self.get(plural, name, namespace)) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{plural}/{name} still exists after {timeout}s: {last}")
            time.sleep(0.1)
