"""The Notification value every notifier posts, built from a policy's evaluation (pure)."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from modelwarden.api.driftpolicy import CheckResult, Evaluation, Verdict
from modelwarden.contract.metrics import MODEL, PREDICTIONS, TRACK, VERSION

# kind -> (Alertmanager alertname, severity label)
KINDS = {
    "Breach": ("DriftPolicyBreached", "critical"),
    "EvaluationError": ("DriftPolicyEvaluationError", "warning"),
    "InsufficientData": ("DriftPolicyInsufficientData", "info"),
    "DriftWarning": ("DriftPolicyWarning", "info"),
}


@dataclass(frozen=True)
class Notification:
    """One alert (or its resolution) as data; each notifier renders it in its own format."""

    kind: str  # a key of KINDS: the alert's identity together with the labels
    reason: str  # the Kubernetes Event reason: DriftDetected, QualityDegraded, EvaluationError, InsufficientData, Recovered
    subject: str
    summary: str
    severity: str  # critical, warning or info (a resolution keeps the severity of what it resolves)
    labels: dict[str, str]  # model, namespace, policy, track, modeldeployment
    starts_at: datetime.datetime
    ends_at: datetime.datetime  # when an unrefreshed alert expires; for a resolution: now
    resolved: bool = False
    fields: tuple[tuple[str, str], ...] = ()
    links: tuple[tuple[str, str], ...] = ()

    @property
    def alertname(self) -> str:
        return KINDS[self.kind][0]

    @property
    def dedup_key(self) -> str:
        """The same for every delivery attempt of this transition (a retry after a timeout the
        receiver did see), different for the next one: receivers drop what they already have."""
        identity = "|".join([self.kind, "resolved" if self.resolved else "firing", _ts(self.starts_at),
                             *(f"{k}={v}" for k, v in sorted(self.labels.items()))])
        return hashlib.sha256(identity.encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        """The generic JSON shape (the webhook body)."""
        return {
            "version": "1",
            "dedupKey": self.dedup_key,
            "status": "resolved" if self.resolved else "firing",
            "kind": self.kind,
            "alertname": self.alertname,
            "reason": self.reason,
            "severity": self.severity,
            "subject": self.subject,
            "summary": self.summary,
            "labels": dict(self.labels),
            "fields": [{"name": name, "value": value} for name, value in self.fields],
            "links": [{"title": title, "url": url} for title, url in self.links],
            "startsAt": _ts(self.starts_at),
            "endsAt": _ts(self.ends_at),
        }


@dataclass(frozen=True)
class AlertContext:
    """Who is judged: the labels of every notification of one policy."""

    policy: str
    namespace: str
    modeldeployment: str
    model: str
    track: str
    version: str | None = None
    prometheus_url: str | None = None
    extra_fields: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def labels(self) -> dict[str, str]:
        return {"model": self.model, "namespace": self.namespace, "policy": self.policy, "track": self.track,
                "modeldeployment": self.modeldeployment}

    def target(self) -> str:
        version = f" version {self.version}" if self.version else ""
        return f"ModelDeployment {self.modeldeployment} ({self.track}{version})"


def build_notification(
    context: AlertContext, kind: str, reason: str, evaluation: Evaluation | None, consecutive: str,
    actions: list[str], now: datetime.datetime, expires_after: datetime.timedelta, resolved: bool = False,
) -> Notification:
    """A firing alert expires after ``expires_after`` unless refreshed; a resolution ends now."""
    verdict = evaluation.verdict.value if evaluation else Verdict.ERROR.value
    if resolved:
        subject = f"[resolved] {context.model}/{context.track}: DriftPolicy {context.policy} passes again"
        summary = f"{context.target()} passes every check of DriftPolicy {context.policy} again."
    else:
        problem = {"Breach": "breached", "EvaluationError": "cannot evaluate", "InsufficientData": "has too little data",
                   "DriftWarning": "warns of drift (no action)"}[kind]
        subject = f"{context.model}/{context.track}: DriftPolicy {context.policy} {problem}"
        summary = f"{context.target()}: {_describe(evaluation)}"
    fields = [("Verdict", verdict), ("Consecutive failures", consecutive)]
    if evaluation is not None and evaluation.samples is not None:
        fields.append(("Samples", str(evaluation.samples)))
    if actions and not resolved:
        fields.append(("Actions", ", ".join(actions)))
    for check in _notable(evaluation):
        fields.append((check.check, _check_text(check)))
    links = []
    if context.prometheus_url:
        expr = f'sum by ({TRACK}, {VERSION}) (rate({PREDICTIONS}{{{MODEL}="{context.model}"}}[5m]))'
        links.append(("Prometheus", f"{context.prometheus_url.rstrip('/')}/graph?g0.expr={quote(expr)}"))
    return Notification(
        kind=kind, reason=reason, subject=subject, summary=summary, severity=KINDS[kind][1], labels=context.labels,
        starts_at=now, ends_at=now if resolved else now + expires_after, resolved=resolved,
        fields=tuple(fields) + context.extra_fields, links=tuple(links),
    )


def _notable(evaluation: Evaluation | None, limit: int = 10) -> list[CheckResult]:
    if evaluation is None:
        return []
    return [r for r in evaluation.results if r.verdict != Verdict.PASS][:limit]


def _describe(evaluation: Evaluation | None) -> str:
    notable = _notable(evaluation)
    if not notable:
        return "no check result"
    return "; ".join(f"{r.check} {r.verdict.value}" + (f" ({r.message})" if r.message else "") for r in notable)


def _check_text(check: CheckResult) -> str:
    parts = [check.verdict.value]
    if check.value is not None:
        parts.append(f"value {check.value:.4g}")
    if check.threshold is not None:
        parts.append(f"threshold {check.threshold:.4g}")
    if check.message:
        parts.append(check.message)
    return ", ".join(parts)


def _ts(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
