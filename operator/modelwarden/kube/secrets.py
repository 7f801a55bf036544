"""Secrets a policy or a ModelDeployment may use: only those labelled modelwarden.io/policy-use=true
(the operator can read Secrets cluster-wide; a resource's author must not reach every one of them)."""

from __future__ import annotations

import base64
from collections.abc import Callable

from modelwarden.contract.kubernetes import SECRET_OPT_IN_LABEL
from modelwarden.kube.api import KubeApi

SecretReader = Callable[[str, str], str]


def opted_in_secret_reader(kube: KubeApi, namespace: str) -> SecretReader:
    """(name, key) -> the value, or LookupError saying why not (missing, not opted in, no such key)."""
    def read(name: str, key: str) -> str:
        secret = kube.get("v1", "Secret", namespace, name)
        if secret is None:
            raise LookupError(f"Secret {name} not found")
        if ((secret.get("metadata") or {}).get("labels") or {}).get(SECRET_OPT_IN_LABEL) != "true":
            raise LookupError(f"Secret {name} is not labelled {SECRET_OPT_IN_LABEL}=true: a policy may only use Secrets opted in for it")
        data = secret.get("data") or {}
        if key not in data:
            raise LookupError(f"Secret {name} has no key {key}")
        return base64.b64decode(data[key]).decode()

    return read
