"""Resolving `models:/` and `runs:/` URIs against an MLflow tracking server's REST API.

Why `requests` and not `mlflow.MlflowClient`: the client takes its credentials from process-wide
environment variables (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME, ...), read at request
time. The operator resolves URIs for many namespaces at once, each with its own tracking server
and token, from concurrent handler threads; swapping os.environ around a call would race and
could send one namespace's token to another's server. So each MlflowRegistry carries its own
URL and token and every call passes them explicitly; an instance holds no mutable state and is
safe to share between threads. It also keeps mlflow (seconds to import) out of the operator.

Endpoints (MLflow REST API 2.0, unchanged in 3.x):
  models:/NAME@ALIAS  GET registered-models/alias
  models:/NAME/N      GET model-versions/get
  models:/NAME/STAGE  GET registered-models/get-latest-versions (`latest`: newest of any stage)
  runs:/RUN_ID/PATH   GET runs/get
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from modelwarden.contract.modeluri import ModelUri, Resolution, Scheme, concrete_model_uri
from modelwarden.registry.base import RegistryError, RegistryUnavailable
from modelwarden.retry import RetryPolicy

API = "api/2.0/mlflow"
STAGES = ("None", "Staging", "Production", "Archived")
LATEST = "latest"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
TRACKING_TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
INSECURE_TLS_ENV = "MLFLOW_TRACKING_INSECURE_TLS"
CERT_PATH_ENV = "MLFLOW_TRACKING_SERVER_CERT_PATH"
_MAX_MESSAGE = 400


class _Transient(Exception):
    """Worth another attempt: the server was unreachable, timed out or answered 429/5xx."""


class MlflowRegistry:
    """One MLflow tracking server (with its registry) and the token to read it with."""

    def __init__(self, tracking_uri: str, token: str | None = None, timeout: float = 10, *,
                 verify: bool | str = True, retry: RetryPolicy | None = None):
        parts = urlsplit(tracking_uri or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"MLflow tracking URI {_redact_url(tracking_uri)!r} is not an http(s) URL")
        self._base = tracking_uri.rstrip("/")
        self._token = token or None
        self._timeout = timeout
        self._verify = verify
        self._retry = retry or RetryPolicy(attempts=2)
        self.site = _redact_url(self._base)  # for messages: no userinfo, no query

    @classmethod
    def from_env(cls, env: Mapping[str, str], timeout: float = 10) -> MlflowRegistry:
        """From MLflow's own variables (what a namespace's store Secret holds): MLFLOW_TRACKING_URI,
        MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH."""
        uri = env.get(TRACKING_URI_ENV, "").strip()
        if not uri:
            raise RegistryError(f"{TRACKING_URI_ENV} is not set: no MLflow tracking server to resolve against")
        verify: bool | str = True
        if env.get(INSECURE_TLS_ENV, "").strip().lower() in ("1", "true", "yes"):
            verify = False
        elif env.get(CERT_PATH_ENV, "").strip():
            verify = env[CERT_PATH_ENV].strip()
        return cls(uri, env.get(TRACKING_TOKEN_ENV) or None, timeout, verify=verify)

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.site!r}, token={'set' if self._token else 'unset'})"

    def resolve(self, uri: ModelUri) -> Resolution:
        """Raises RegistryError, its message one line starting with the URI."""
        try:
            return self._resolve(uri)
        except RegistryError as error:
            raise RegistryError(self._one_line(f"{uri.printable}: {error}")) from None

    def _resolve(self, uri: ModelUri) -> Resolution:
        if uri.scheme is Scheme.MLFLOW_RUN:
            return self._resolve_run(uri)
        if uri.scheme is not Scheme.MLFLOW_MODEL:
            raise RegistryError("not an MLflow registry URI (models:/ or runs:/)")
        if uri.alias:
            version = self._by_alias(uri.location, uri.reference)
        elif uri.reference.isdigit():
            version = self._by_number(uri.location, uri.reference)
        else:
            version = self._by_stage(uri.location, uri.reference)
        number = str(version["version"])
        status = version.get("status", "READY")
        if status != "READY":
            raise RegistryError(f"version {number} of registered model {uri.location!r} is {status}, not READY")
        return Resolution(uri=uri.uri, resolved_uri=concrete_model_uri(uri.location, number),
                          model_version=number, run_id=version.get("run_id") or None)

    def tagged_versions(self, tag: str, value: str) -> list[dict[str, Any]]:
        """Model versions tagged tag=value, newest first (a retraining Job's result, contract/retraining.py)."""
        quoted = value.replace("'", "")  # a breach id is NAMESPACE/JOB: no quote can be in it
        what = f"model versions tagged {tag}={quoted}"
        status, body = self._get("model-versions/search", {"filter": f"tags.`{tag}` = '{quoted}'", "max_results": 50}, what)
        self.check(status, body, what)
        found = [v for v in body.get("model_versions") or [] if isinstance(v, dict) and str(v.get("version", "")).isdigit()]
        return sorted(found, key=lambda v: int(v["version"]), reverse=True)

    # One lookup per kind of reference; each returns the ModelVersion object of the answer.

    def _by_alias(self, name: str, alias: str) -> dict[str, Any]:
        what = f"alias {alias!r} of registered model {name!r}"
        status, body = self._get("registered-models/alias", {"name": name, "alias": alias}, what)
        if status == 404:
            raise RegistryError(f"registered model {name!r} not found in MLflow at {self.site} (looking up alias {alias!r})")
        if status == 400 and body.get("error_code") == "INVALID_PARAMETER_VALUE":
            # MLflow answers a missing alias with 400 "Registered model alias X not found."
            raise RegistryError(f"no alias {alias!r} on registered model {name!r} in MLflow at {self.site}")
        return self._version(status, body, what)

    def _by_number(self, name: str, number: str) -> dict[str, Any]:
        what = f"version {number} of registered model {name!r}"
        status, body = self._get("model-versions/get", {"name": name, "version": number}, what)
        if status == 404:
            raise RegistryError(f"{what} not found in MLflow at {self.site} (deleted, or never registered)")
        return self._version(status, body, what)

    def _by_stage(self, name: str, stage: str) -> dict[str, Any]:
        latest = stage.lower() == LATEST
        what = f"the {'latest version' if latest else f'{stage!r} stage'} of registered model {name!r}"
        params: dict[str, Any] = {"name": name}
        if not latest:
            params["stages"] = [stage]
        status, body = self._get("registered-models/get-latest-versions", params, what)
        if status == 404:
            raise RegistryError(f"registered model {name!r} not found in MLflow at {self.site}")
        if status == 400 and body.get("error_code") == "INVALID_PARAMETER_VALUE":
            raise RegistryError(f"{stage!r} is not a version, stage ({', '.join(STAGES)}) or {LATEST!r} "
                                f"of registered model {name!r}; an alias is models:/{name}@ALIAS")
        self.check(status, body, what)
        versions = [v for v in body.get("model_versions", []) if str(v.get("version", "")).isdigit()]
        if not versions:
            raise RegistryError(f"registered model {name!r} has no version "
                                f"{'at all' if latest else f'in stage {stage!r}'} in MLflow at {self.site}")
        return max(versions, key=lambda v: int(v["version"]))

    def _resolve_run(self, uri: ModelUri) -> Resolution:
        what = f"run {uri.location}"
        status, body = self._get("runs/get", {"run_id": uri.location}, what)
        if status == 404:
            raise RegistryError(f"run {uri.location} not found in MLflow at {self.site}")
        self.check(status, body, what)
        info = (body.get("run") or {}).get("info") or {}
        if info.get("lifecycle_stage") == "deleted":
            raise RegistryError(f"run {uri.location} is deleted in MLflow at {self.site}")
        return Resolution(uri=uri.uri, resolved_uri=uri.uri, model_version=None, run_id=uri.location)

    # HTTP.

    def _get(self, path: str, params: dict[str, Any], what: str) -> tuple[int, dict[str, Any]]:
        return self.call("GET", path, what, params=params)

    def call(self, method: str, path: str, what: str, *, params: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of one REST call under api/2.0/mlflow; 401/403 raise RegistryError,
        an unreachable server or 429/5xx (after the retry policy's attempts) RegistryUnavailable."""
        try:
            return self._retry.call(lambda: self._attempt(method, path, params, body, what), retry_on=_Transient)
        except _Transient as error:
            raise RegistryUnavailable(str(error)) from None

    def _attempt(self, method: str, path: str, params: dict[str, Any] | None, body: dict[str, Any] | None,
                 what: str) -> tuple[int, dict[str, Any]]:
        headers = {"Accept": "application/json", "User-Agent": "modelwarden"}
        doing = "reading" if method == "GET" else "writing"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = requests.request(method, f"{self._base}/{API}/{path}", params=params, json=body, headers=headers,
                                        timeout=self._timeout, verify=self._verify)
        except requests.Timeout:
            raise _Transient(f"MLflow at {self.site} did not answer within {self._timeout:g}s ({doing} {what})") from None
        except requests.ConnectionError as error:
            raise _Transient(f"MLflow at {self.site} is unreachable ({_reason(error)}) ({doing} {what})") from None
        except requests.RequestException as error:
            raise RegistryError(f"request to MLflow at {self.site} failed ({type(error).__name__}) ({doing} {what})") from None
        status = response.status_code
        if status in (401, 403):
            hint = "check the token" if self._token else "no token was set (MLFLOW_TRACKING_TOKEN)"
            verb = "read" if method == "GET" else "write"
            raise RegistryError(f"not authorised to {verb} {what} from MLflow at {self.site} (HTTP {status}): {hint}")
        if status == 429 or status >= 500:
            raise _Transient(f"MLflow at {self.site} answered HTTP {status} ({doing} {what})")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise RegistryError(f"MLflow at {self.site} answered HTTP {status} without a JSON object ({doing} {what}): "
                                "is the tracking URI the server's root URL?")
        return status, answer

    def check(self, status: int, body: dict[str, Any], what: str) -> None:
        """Raise RegistryError for an answer other than 200, naming MLflow's error code and message."""
        if status != 200:
            code = body.get("error_code") or "an error"
            said = f": {body['message']}" if isinstance(body.get("message"), str) and body["message"] else ""
            raise RegistryError(self._one_line(f"MLflow at {self.site} answered HTTP {status} {code} for {what}{said}"))

    def _version(self, status: int, body: dict[str, Any], what: str) -> dict[str, Any]:
        self.check(status, body, what)
        version = body.get("model_version")
        if not isinstance(version, dict) or not str(version.get("version", "")).isdigit():
            raise RegistryError(f"MLflow at {self.site} answered without a model version reading {what}")
        return version

    def _one_line(self, message: str) -> str:
        """Messages end up in conditions and events: one line, bounded, never the token."""
        if self._token:
            message = message.replace(self._token, "***")
        message = " ".join(message.split())
        return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def _redact_url(url: str) -> str:
    """The URL without userinfo, query or fragment (a token may sit in any of them)."""
    try:
        parts = urlsplit(url or "")
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")) or "(empty)"
    except ValueError:
        return "(unparseable URL)"


def _reason(error: requests.ConnectionError) -> str:
    text = str(error)
    for known in ("Connection refused", "Name or service not known", "No route to host", "certificate verify failed",
                  "Temporary failure in name resolution", "Connection reset"):
        if known in text:
            return known.lower()
    return type(error).__name__
