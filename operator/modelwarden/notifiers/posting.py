"""One JSON POST with a timeout, shared by the HTTP notifiers; any failure becomes NotifyError."""

from __future__ import annotations

import requests

from modelwarden.notifiers.base import NotifyError


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    try:
        response = requests.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=timeout)
    except requests.RequestException as exc:
        raise NotifyError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code >= 300:
        raise NotifyError(f"HTTP {response.status_code}: {response.text[:200]}")
