"""What the Airflow and Kubeflow backends share: one HTTP session per API server, the operator's
egress rule for the destination, and errors that say what the server said."""

from __future__ import annotations

import threading
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests

from modelwarden.retrainers.base import BackendUnavailable

_sessions: dict[str, requests.Session] = {}
_lock = threading.Lock()


def session(base_url: str) -> requests.Session:
    """Kept per server: the next tick reuses its connections. It keeps no cookies: policies of
    different namespaces share it, and a cookie one of them earned must not ride along with another's."""
    with _lock:
        if base_url not in _sessions:
            shared = requests.Session()
            shared.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            _sessions[base_url] = shared
        return _sessions[base_url]


def json_body(response: requests.Response, what: str) -> Any:
    """The answer as JSON; anything else (a login page of a proxy) is BackendUnavailable."""
    try:
        return response.json()
    except ValueError:
        raise BackendUnavailable(f"{what}: HTTP {response.status_code} answered {response.headers.get('content-type') or 'no content type'}, "
                                 "not JSON") from None


def reason(response: requests.Response) -> str:
    """HTTP status and the server's own message (Airflow's `detail`, KFP's `message`), one line."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body = body.get("detail") or body.get("message") or body.get("error") or body
    return f"HTTP {response.status_code}: {str(body)[:300]}"


def call(method: str, url: str, timeout: float, what: str, **kwargs: Any) -> requests.Response:
    """One request, redirects not followed (they could lead anywhere); a connection failure or a
    5xx is BackendUnavailable (asked again later)."""
    base = url.split("/api", 1)[0]
    try:
        response = session(base).request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.RequestException as exc:
        raise BackendUnavailable(f"{what}: {type(exc).__name__}: {exc}"[:500]) from None
    if response.status_code >= 500:
        raise BackendUnavailable(f"{what}: {reason(response)}")
    return response
