"""One JSON POST with a timeout, shared by the HTTP notifiers; any failure becomes NotifyError.

The error names the host and what went wrong, never the URL's path (a Slack webhook's path is
its secret) nor the receiver's answer (it ends up in Events the policy's author can read)."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from modelwarden.notifiers.base import NotifyError


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    host = urlsplit(url).hostname or "(no host)"
    try:
        response = requests.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=timeout)
    except requests.Timeout as exc:
        raise NotifyError(f"{type(exc).__name__}: no answer from {host} within {timeout:g}s") from exc
    except requests.RequestException as exc:
        raise NotifyError(f"{type(exc).__name__}: cannot post to {host}") from exc
    if response.status_code >= 300:
        raise NotifyError(f"HTTP {response.status_code} from {host}")
