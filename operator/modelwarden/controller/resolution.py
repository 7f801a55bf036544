"""Resolving the registry URIs of ModelDeployments (models:/NAME@ALIAS, models:/NAME/STAGE,
models:/NAME/N, runs:/ID/PATH) to the exact model version a rollout deploys.

Each (namespace, store Secret, URI) is looked up again every `spec.storage.resolveInterval`
(a concrete version once, as it cannot move); a failed look-up is retried after a few seconds.
The tracking server and token are the ModelDeployment's store Secret's (MLFLOW_TRACKING_URI,
MLFLOW_TRACKING_TOKEN; only a Secret labelled modelwarden.io/policy-use=true) or the operator's
own (--mlflow-tracking-uri, MLFLOW_TRACKING_TOKEN); a tracking server the cluster admin did not
allow (--allowed-registry-urls) is never contacted. Failures come back as one-line reasons for
condition ModelResolved; the plan then keeps serving what status records.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.contract import modeluri
from modelwarden.contract.kubernetes import SECRET_OPT_IN_LABEL
from modelwarden.contract.modeluri import Resolution
from modelwarden.controller.config import OperatorConfig
from modelwarden.kube.api import KubeApi, describe_error
from modelwarden.registry.base import ModelRegistry, RegistryError

RETRY_FAILED_SECONDS = 30.0  # a registry that failed is asked again after this (each look-up may take LOOKUP_TIMEOUT)
LOOKUP_TIMEOUT = 5.0  # one attempt: reconciles share a pool, and a blackholed registry must not hold it
FORGET_AFTER_SECONDS = 3600.0  # cache entries nobody asked for in this long are dropped

RegistryFactory = Callable[[str, "str | None"], ModelRegistry]


def mlflow_registry(tracking_uri: str, token: str | None) -> ModelRegistry:
    from modelwarden.registry.mlflow import MlflowRegistry
    from modelwarden.retry import RetryPolicy

    return MlflowRegistry(tracking_uri, token=token, timeout=LOOKUP_TIMEOUT, retry=RetryPolicy(attempts=1))


class Resolver:
    """Thread-safe: reconciles of many ModelDeployments resolve at once."""

    def __init__(self, config: OperatorConfig, kube: KubeApi, registry: RegistryFactory = mlflow_registry,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.kube, self.registry, self.clock = config, kube, registry, clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str | None, str], tuple[float, Resolution | str]] = {}

    def resolve(self, md: ModelDeployment) -> dict[str, Resolution | str]:
        """Every registry URI of the spec -> its Resolution, or why it has none."""
        namespace = md.metadata.get("namespace", "default")
        secret = md.spec.storage.secret_ref.name if md.spec.storage.secret_ref else None
        interval = md.spec.storage.resolve_interval.total_seconds()
        found: dict[str, Resolution | str] = {}
        for track in (md.spec.stable, md.spec.canary, md.spec.shadow):
            if track is None or track.model_uri in found:
                continue
            uri = modeluri.parse(track.model_uri)
            if uri.registry:
                found[track.model_uri] = self._cached(namespace, secret, uri, interval)
        alias = md.spec.candidates.alias_uri if md.spec.candidates else None
        if alias and alias not in found:  # the closed loop's source: each version it names becomes a candidate
            found[alias] = self._cached(namespace, secret, modeluri.parse(alias), interval)
        return found

    def _cached(self, namespace: str, secret: str | None, uri: modeluri.ModelUri, interval: float) -> Resolution | str:
        key = (namespace, secret, uri.uri)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            at, answer = hit
            fresh_for = (float("inf") if not uri.moving else interval) if isinstance(answer, Resolution) else RETRY_FAILED_SECONDS
            if now - at < fresh_for:
                return answer
        answer = self._look_up(namespace, secret, uri)
        with self._lock:
            self._cache[key] = (now, answer)
            for stale in [k for k, (at, _) in self._cache.items() if now - at > FORGET_AFTER_SECONDS]:
                del self._cache[stale]
        return answer

    def _look_up(self, namespace: str, secret: str | None, uri: modeluri.ModelUri) -> Resolution | str:
        try:
            tracking_uri, token = self._credentials(namespace, secret)
        except LookupError as exc:
            return str(exc)
        refusal = self.config.egress.registry_refusal(tracking_uri, self.config.mlflow_tracking_uri)
        if refusal:
            return refusal
        try:
            return self.registry(tracking_uri, token).resolve(uri)
        except RegistryError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - any client failure is a reason on the condition, never a crash loop
            return f"{uri.uri}: {type(exc).__name__}: {exc}".splitlines()[0][:300]

    def _credentials(self, namespace: str, secret: str | None) -> tuple[str, str | None]:
        """The store Secret's MLflow settings when it is opted in and names a tracking server, else
        the operator's (a Secret not opted in is the pods' alone)."""
        data: dict[str, str] = {}
        if secret:
            try:
                data = self._secret_data(namespace, secret)
            except LookupError:
                if not self.config.mlflow_tracking_uri:
                    raise
        if data.get("MLFLOW_TRACKING_URI"):
            return data["MLFLOW_TRACKING_URI"], data.get("MLFLOW_TRACKING_TOKEN") or None
        if not self.config.mlflow_tracking_uri:
            raise LookupError("no MLflow tracking server: the store Secret has no MLFLOW_TRACKING_URI and the operator "
                              "has no --mlflow-tracking-uri")
        return self.config.mlflow_tracking_uri, self.config.mlflow_tracking_token

    def _secret_data(self, namespace: str, name: str) -> dict[str, str]:
        try:
            secret: dict[str, Any] | None = self.kube.get("v1", "Secret", namespace, name)
        except Exception as exc:  # noqa: BLE001 - RBAC or the API: a reason, not a crash
            raise LookupError(f"cannot read Secret {name}: {describe_error(exc)}") from None
        if secret is None:
            raise LookupError(f"Secret {name} (spec.storage.secretRef) not found")
        if ((secret.get("metadata") or {}).get("labels") or {}).get(SECRET_OPT_IN_LABEL) != "true":
            raise LookupError(f"Secret {name} is not labelled {SECRET_OPT_IN_LABEL}=true: the operator only reads Secrets "
                              "opted in (its pods still get it)")
        return {k: base64.b64decode(v).decode("utf-8", "replace").strip() for k, v in (secret.get("data") or {}).items()}
