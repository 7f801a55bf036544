"""What a DriftPolicy's breach does: alerts (Slack, webhook, Alertmanager, email) and retraining."""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from modelwarden.api.common import PROMETHEUS_LABEL_NAME_PATTERN, ApiModel, BasicAuth, SecretKeyRef, cel_rules, cel_string
from modelwarden.api.duration import Duration
from modelwarden.api.fields import (
    CRON_MESSAGE,
    CRON_PATTERN,
    URL_PATTERN,
    EmailAddress,
    HeaderValue,
    JobMetadata,
    JobPodTemplate,
    check_cron,
    check_headers,
    header_rules,
)
from modelwarden.api.retrainers import AirflowRetrain, ArgoWorkflowRetrain, KubeflowRetrain

BACKENDS = ("jobTemplate", "argoWorkflow", "airflow", "kubeflow")


class SlackAlert(ApiModel):
    """A Slack incoming webhook."""

    webhook_secret_ref: SecretKeyRef
    """Secret key holding the webhook URL."""
    channel: str | None = Field(default=None, max_length=80)
    """Override the webhook's channel."""


class WebhookAlert(ApiModel):
    """A generic JSON webhook, optionally HMAC-SHA256 signed."""

    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    """Receiver URL (no credentials in it)."""
    hmac_secret_ref: SecretKeyRef | None = None
    """Secret key used to sign each request (header X-Modelwarden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">; receivers should reject old timestamps)."""
    headers: dict[str, HeaderValue] = Field(default_factory=dict, max_length=16, json_schema_extra=header_rules(True))
    """Extra headers (no secrets here: use hmacSecretRef)."""

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return check_headers(headers, allow_authorization=True)


class AlertmanagerAlert(ApiModel):
    """An Alertmanager v2 API endpoint."""

    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    """Base URL, e.g. http://alertmanager.monitoring:9093 (no credentials in it)."""
    labels: dict[str, str] = Field(default_factory=dict, max_length=16, json_schema_extra={"x-kubernetes-validations": [
        {"rule": f"self.all(k, k.matches({cel_string(PROMETHEUS_LABEL_NAME_PATTERN)}))",
         "message": "labels: names must match [a-zA-Z_][a-zA-Z0-9_]* (Alertmanager refuses others)"}]})
    """Extra alert labels."""

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        bad = [name for name in labels if not re.fullmatch(PROMETHEUS_LABEL_NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"label name {bad[0]!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        return labels


class EmailAlert(ApiModel):
    """Email over SMTP; credentials are never sent in plaintext unless allowPlaintextAuth says so."""

    model_config = cel_rules((  # unset booleans read as their defaults (starttls: true)
        "!has(self.authSecretRef) || !has(self.starttls) || self.starttls || (has(self.implicitTLS) && self.implicitTLS)"
        " || (has(self.allowPlaintextAuth) && self.allowPlaintextAuth)", "spec.actions.alert.email.authSecretRef: credentials "
        "need TLS (starttls or implicitTLS); set allowPlaintextAuth: true to send them in plaintext anyway", ".authSecretRef"))

    host: str = Field(min_length=1, max_length=253)
    """SMTP server host."""
    port: int = Field(default=587, ge=1, le=65535)
    """SMTP server port (465 for implicitTLS)."""
    starttls: bool = True
    """Upgrade a plaintext connection with STARTTLS (refused if the server does not offer it). No effect with implicitTLS."""
    implicit_tls: bool = Field(default=False, alias="implicitTLS")
    """Speak TLS from the first byte (SMTPS, usually port 465) instead of STARTTLS."""
    allow_plaintext_auth: bool = False
    """Send authSecretRef's credentials even when neither starttls nor implicitTLS protects them."""
    auth_secret_ref: BasicAuth | None = None
    """SMTP credentials from a Secret (sent only over TLS unless allowPlaintextAuth)."""
    from_address: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    """Sender address."""
    to: list[EmailAddress] = Field(min_length=1, max_length=32)
    """Recipient addresses."""


class AlertSpec(ApiModel):
    """Where alerts go (a Kubernetes Event is always emitted)."""

    slack: SlackAlert | None = None
    """Slack incoming webhook."""
    webhook: WebhookAlert | None = None
    """Generic JSON webhook."""
    alertmanager: AlertmanagerAlert | None = None
    """Alertmanager v2 API."""
    email: EmailAlert | None = None
    """Email."""
    repeat_interval: Duration = timedelta(hours=1)
    """Minimum time between repeats of the same alert."""
    on_insufficient_data: bool = False
    """Also alert when the verdict is InsufficientData."""
    on_error: bool = False
    """Also alert when an evaluation errors."""
    on_warning: bool = False
    """Also alert when the verdict is Warning (a distance at drift.warnThreshold); it never acts."""


class JobTemplate(ApiModel):
    """A batch/v1 Job template for retraining."""

    metadata: JobMetadata = Field(default_factory=dict)
    """Labels and annotations for the Job (its name is the operator's)."""
    backoff_limit: int | None = Field(default=None, ge=0, le=100)
    """Retries before the Job fails."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Maximum run time."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Clean-up delay after the Job finishes."""
    template: JobPodTemplate
    """The Job's pod template: at least one container with a name and an image; restartPolicy
    Never (the default) or OnFailure."""


class RetrainSpec(ApiModel):
    """Launch a retraining run on a breach and/or on a schedule: a batch/v1 Job, an Argo Workflow,
    an Airflow DAG run or a Kubeflow Pipelines run (exactly one)."""

    model_config = cel_rules(
        (" + ".join(f"(has(self.{b}) ? 1 : 0)" for b in BACKENDS) + " == 1",
         "spec.actions.retrain: set exactly one of jobTemplate, argoWorkflow, airflow and kubeflow", ""),
        ("!has(self.schedule) || has(self.jobTemplate)",
         "spec.actions.retrain.schedule: only a jobTemplate runs on the operator's schedule (schedule a DAG, "
         "CronWorkflow or recurring run in its own system)", ".schedule"))

    job_template: JobTemplate | None = None
    """A batch/v1 Job to run; context arrives as MODELWARDEN_* environment variables."""
    argo_workflow: ArgoWorkflowRetrain | None = None
    """Or an Argo Workflow; context arrives as MODELWARDEN_* workflow arguments."""
    airflow: AirflowRetrain | None = None
    """Or an Airflow DAG run; context arrives as the run's conf."""
    kubeflow: KubeflowRetrain | None = None
    """Or a Kubeflow Pipelines run; context arrives as one JSON parameter."""
    cooldown: Duration = timedelta(hours=24)
    """Minimum time between breach-triggered runs."""
    schedule: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra={
        "x-kubernetes-validations": [{"rule": f"self.matches({cel_string(CRON_PATTERN)})", "message": CRON_MESSAGE}]})
    """Cron expression (five fields, as a CronJob takes it) or @hourly/@daily/@weekly/@monthly/@yearly for a CronJob owned by the policy (jobTemplate only)."""
    on_breach: bool = True
    """Launch a run when the policy breaches (after failureThreshold)."""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str | None) -> str | None:
        return None if schedule is None else check_cron(schedule)

    @model_validator(mode="after")
    def _one_backend(self) -> RetrainSpec:
        if sum(b is not None for b in (self.job_template, self.argo_workflow, self.airflow, self.kubeflow)) != 1:
            raise ValueError("retrain: set exactly one of jobTemplate, argoWorkflow, airflow and kubeflow")
        if self.schedule is not None and self.job_template is None:
            raise ValueError("retrain.schedule: only a jobTemplate runs on the operator's schedule")
        return self

    @property
    def backend(self) -> str:
        """Job, ArgoWorkflow, Airflow or Kubeflow: what status.lastRetrain.backend says."""
        if self.argo_workflow is not None:
            return "ArgoWorkflow"
        if self.airflow is not None:
            return "Airflow"
        return "Kubeflow" if self.kubeflow is not None else "Job"


class ActionsSpec(ApiModel):
    """What happens on a breach."""

    alert: AlertSpec | None = None
    """Notifications."""
    rollback: bool = False
    """Roll back the target track (abort a canary; revert stable to the previous version)."""
    retrain: RetrainSpec | None = None
    """Retraining runs (Job, Argo Workflow, Airflow DAG run or Kubeflow Pipelines run)."""
