"""Where a DriftPolicy may make the operator connect: the cluster admin's rules, not the policy
author's. Without them, anyone allowed to create a DriftPolicy could point `prometheus.url` or an
alert at their own server and receive the Secrets the policy references (the operator reads them
with its own, wider permissions), or probe internal services through the operator (SSRF).

- Prometheus URLs: a policy's `prometheus.url` must fall under one of the allowed URL prefixes
  (scheme, host and port equal; the path on a segment boundary). By default only the operator's
  own `--prometheus-url`; `*` allows any.
- Alert hosts: every alert destination (webhook, Slack, Alertmanager URLs, the SMTP host) must be
  an allowed host (`hooks.slack.com`, or `*.example.com` for its subdomains). By default any
  host (`*`), as alerts carry no Secret of the policy's except to their own destination.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

ANY = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class EgressRules:
    prometheus_urls: tuple[str, ...] = ()  # allowed URL prefixes; () means only the operator's own
    alert_hosts: tuple[str, ...] = (ANY,)
    registry_urls: tuple[str, ...] = ()  # MLflow tracking URIs a ModelDeployment's store Secret may name; () means only the operator's own

    def registry_refusal(self, url: str, operator_url: str | None) -> str | None:
        """Why the MLflow tracking server at `url` may not be asked to resolve a model (None: it may)."""
        allowed = self.registry_urls or ((operator_url,) if operator_url else ())
        if ANY in allowed or any(_under(url, prefix) for prefix in allowed):
            return None
        return (f"MLflow tracking URI {_origin(url)} is not allowed by the operator (allowed: "
                f"{', '.join(_origin(a) for a in allowed) or 'none'}; the cluster admin sets --allowed-registry-urls)")

    def prometheus_refusal(self, url: str, operator_url: str) -> str | None:
        """Why `url` may not be queried (None: it may)."""
        allowed = self.prometheus_urls or (operator_url,)
        if ANY in allowed or any(_under(url, prefix) for prefix in allowed):
            return None
        return (f"prometheus.url {_origin(url)} is not allowed by the operator (allowed: {', '.join(_origin(a) for a in allowed)}; "
                "the cluster admin sets --allowed-prometheus-urls)")

    def alert_refusal(self, destination: str) -> str | None:
        """Why an alert may not go to `destination`, a URL or a bare host (None: it may)."""
        host = (urlsplit(destination).hostname if "://" in destination else destination) or ""
        host = host.lower().rstrip(".")
        if any(_host_matches(host, pattern.lower()) for pattern in self.alert_hosts):
            return None
        return f"alert host {host or '(none)'} is not allowed by the operator (--allowed-alert-hosts: {', '.join(self.alert_hosts)})"


def _under(url: str, prefix: str) -> bool:
    try:
        target, allowed = urlsplit(url), urlsplit(prefix)
        target_port = target.port or DEFAULT_PORTS.get(target.scheme)
        allowed_port = allowed.port or DEFAULT_PORTS.get(allowed.scheme)
    except ValueError:  # an invalid port
        return False
    if (target.scheme, (target.hostname or "").lower(), target_port) != (allowed.scheme, (allowed.hostname or "").lower(), allowed_port):
        return False
    if target.username is not None or target.password is not None:
        return False  # credentials in the URL: never what an admin listed
    base = allowed.path.rstrip("/")
    return target.path == base or target.path.startswith(base + "/") or not base


def _origin(url: str) -> str:
    """The URL without credentials, query or fragment, for messages."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _host_matches(host: str, pattern: str) -> bool:
    if pattern == ANY:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])  # subdomains only: "example.com" does not end in ".example.com"
    return host == pattern
