"""Where a retraining run happens besides a batch/v1 Job: an Argo Workflow, an Airflow DAG run or a
Kubeflow Pipelines run. Each gets the same breach context and is held to the same guarantees (one
run per breach, cooldown, at most one running, the result contract): docs/retraining.md."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from modelwarden.api.common import DATA_KEY_PATTERN, NAME_PATTERN, ApiModel, BasicAuth, SecretKeyRef, cel_rules, cel_string
from modelwarden.api.duration import PositiveDuration, cel_seconds
from modelwarden.api.fields import URL_PATTERN, JobMetadata

ARGO_PARAMETER_PATTERN = r"^[-_a-zA-Z0-9]+$"  # what an Argo parameter name may be
AIRFLOW_DAG_ID_PATTERN = r"^[a-zA-Z0-9_.-]+$"  # Airflow's KEY_REGEX for dag ids
MAX_TIMEOUT = timedelta(seconds=60)  # a request runs on the pool that also writes every policy's status
MIN_POLL = timedelta(seconds=1)


def _bounds(field: str) -> tuple[tuple[str, str, str], ...]:
    """CEL for timeout (at most 60s) and pollInterval (at least 1s), naming the field."""
    return ((f"!has(self.timeout) || {cel_seconds('self.timeout')} <= 60", f"{field}.timeout: at most 60s", ".timeout"),
            (f"!has(self.pollInterval) || {cel_seconds('self.pollInterval')} >= 1", f"{field}.pollInterval: at least 1s",
             ".pollInterval"))


def _check_bounds(field: str, timeout: timedelta | None, poll: timedelta) -> None:
    if timeout is not None and timeout > MAX_TIMEOUT:
        raise ValueError(f"{field}.timeout: at most 60s")
    if poll < MIN_POLL:
        raise ValueError(f"{field}.pollInterval: at least 1s")


def _workflow_spec(spec: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(spec.get("entrypoint"), str) or not spec["entrypoint"]:
        raise ValueError("workflowSpec.entrypoint: the template to run is required")
    templates = spec.get("templates")
    if not isinstance(templates, list) or not templates:
        raise ValueError("workflowSpec.templates: at least one template is required")
    if not any(isinstance(t, dict) and t.get("name") == spec["entrypoint"] for t in templates):
        raise ValueError(f"workflowSpec.entrypoint: no template is named {spec['entrypoint']!r}")
    return spec


# An Argo io.argoproj.workflow.v1alpha1.WorkflowSpec kept as given (Argo validates it when the
# Workflow is created); what a run cannot do without is checked at admission.
WorkflowSpec = Annotated[
    dict[str, Any],
    AfterValidator(_workflow_spec),
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True, "required": ["entrypoint", "templates"],
                    "properties": {"entrypoint": {"type": "string", "minLength": 1, "maxLength": 253, "description": "The template to run."},
                                   "templates": {"type": "array", "minItems": 1, "maxItems": 200, "description": "Argo templates.",
                                                 "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                                           "properties": {"name": {"type": "string", "maxLength": 253,
                                                                                   "description": "The template's name."}}}}},
                    "x-kubernetes-validations": [{"rule": "self.templates.exists(t, has(t.name) && t.name == self.entrypoint)",
                                                  "message": "workflowSpec.entrypoint: no template has this name"}]}),
]
# Parameter values handed to a run as given (strings, numbers, booleans, lists, objects).
Parameters = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "maxProperties": 64, "x-kubernetes-preserve-unknown-fields": True}),
]


class WorkflowTemplateRef(ApiModel):
    """An Argo WorkflowTemplate (or ClusterWorkflowTemplate) to run."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """The template's name (in the policy's namespace unless clusterScope)."""
    cluster_scope: bool = False
    """A ClusterWorkflowTemplate."""


class ArgoWorkflowRetrain(ApiModel):
    """Retrain in an Argo Workflow the operator creates (argoproj.io/v1alpha1), followed by its phase."""

    model_config = cel_rules(
        ("has(self.workflowTemplateRef) != has(self.workflowSpec)",
         "spec.actions.retrain.argoWorkflow: set exactly one of workflowTemplateRef and workflowSpec", ""),
        (f"!has(self.parameters) || self.parameters.all(k, k.matches({cel_string(ARGO_PARAMETER_PATTERN)}))",
         "spec.actions.retrain.argoWorkflow.parameters: names are letters, digits, '-' and '_'", ".parameters"),
        *_bounds("spec.actions.retrain.argoWorkflow")[1:])

    workflow_template_ref: WorkflowTemplateRef | None = None
    """Run this WorkflowTemplate."""
    workflow_spec: WorkflowSpec | None = None
    """Or this inline Workflow spec (entrypoint and templates)."""
    parameters: dict[str, str] = Field(default_factory=dict, max_length=64, json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.all(k, !k.startsWith('MODELWARDEN_'))", "message": "parameters: MODELWARDEN_* names are the operator's"}]})
    """Extra workflow arguments; the context arrives as the MODELWARDEN_* arguments."""
    metadata: JobMetadata = Field(default_factory=dict)
    """Labels and annotations for the Workflow (its name is the operator's)."""
    poll_interval: PositiveDuration = timedelta(seconds=15)
    """How often a running Workflow is looked at (at least 1s)."""

    @model_validator(mode="after")
    def _one_source(self) -> ArgoWorkflowRetrain:
        if (self.workflow_template_ref is None) == (self.workflow_spec is None):
            raise ValueError("argoWorkflow: set exactly one of workflowTemplateRef and workflowSpec")
        if any(name.startswith("MODELWARDEN_") for name in self.parameters):
            raise ValueError("argoWorkflow.parameters: MODELWARDEN_* names are the operator's")
        if any(not re.fullmatch(ARGO_PARAMETER_PATTERN, name) for name in self.parameters):
            raise ValueError("argoWorkflow.parameters: names are letters, digits, '-' and '_'")
        _check_bounds("argoWorkflow", None, self.poll_interval)
        return self


class AirflowRetrain(ApiModel):
    """Retrain in an Airflow DAG run: triggered through Airflow's REST API (v2, Airflow 3) with the
    context as the run's conf, followed by its state."""

    model_config = cel_rules(
        ("!(has(self.authSecretRef) && has(self.tokenSecretRef))",
         "spec.actions.retrain.airflow: set at most one of authSecretRef and tokenSecretRef", ""),
        *_bounds("spec.actions.retrain.airflow"))

    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    """Airflow's API server, e.g. http://airflow-api-server.airflow:8080 (no credentials in it)."""
    dag_id: str = Field(pattern=AIRFLOW_DAG_ID_PATTERN, max_length=250)
    """The DAG to trigger (it must be unpaused)."""
    auth_secret_ref: BasicAuth | None = None
    """A user name and password, exchanged for a token at Airflow's /auth/token."""
    token_secret_ref: SecretKeyRef | None = None
    """Or a bearer token (e.g. from your identity provider)."""
    conf: Parameters = Field(default_factory=dict)
    """Extra conf for the run; the context arrives under the MODELWARDEN_* keys (which win)."""
    timeout: PositiveDuration = timedelta(seconds=10)
    """Per-request timeout (at most 60s)."""
    poll_interval: PositiveDuration = timedelta(seconds=30)
    """How often a running DAG run is asked for its state (at least 1s)."""

    @model_validator(mode="after")
    def _one_credential(self) -> AirflowRetrain:
        if self.auth_secret_ref is not None and self.token_secret_ref is not None:
            raise ValueError("airflow: set at most one of authSecretRef and tokenSecretRef")
        _check_bounds("airflow", self.timeout, self.poll_interval)
        return self


class KubeflowRetrain(ApiModel):
    """Retrain in a Kubeflow Pipelines run of a pipeline version (KFP v2 REST API), followed by its state."""

    model_config = cel_rules(*_bounds("spec.actions.retrain.kubeflow"))  # (parameters has no schema CEL could read)

    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    """KFP's API server, e.g. http://ml-pipeline.kubeflow:8888 (no credentials in it)."""
    pipeline_id: str = Field(min_length=1, max_length=128, pattern=DATA_KEY_PATTERN)
    """The pipeline."""
    pipeline_version_id: str = Field(min_length=1, max_length=128, pattern=DATA_KEY_PATTERN)
    """The pipeline version to run."""
    experiment_id: str | None = Field(default=None, max_length=128, pattern=DATA_KEY_PATTERN)
    """The experiment the runs belong to (KFP's default experiment if unset)."""
    service_account: str | None = Field(default=None, max_length=253, pattern=NAME_PATTERN)
    """The Kubernetes ServiceAccount the run's pods use."""
    parameters: Parameters = Field(default_factory=dict)
    """The pipeline's input parameters."""
    context_parameter: str = Field(default="modelwarden_context", max_length=128, pattern=r"^$|^[a-zA-Z_][a-zA-Z0-9_-]*$")
    """The pipeline's string parameter that receives the context as JSON ("" to pass none: KFP
    refuses parameters a pipeline does not declare)."""
    token_secret_ref: SecretKeyRef | None = None
    """A bearer token for KFP's API (multi-user installations)."""
    timeout: PositiveDuration = timedelta(seconds=10)
    """Per-request timeout (at most 60s)."""
    poll_interval: PositiveDuration = timedelta(seconds=30)
    """How often a running run is asked for its state (at least 1s)."""

    @model_validator(mode="after")
    def _own_parameter(self) -> KubeflowRetrain:
        if (self.context_parameter or "modelwarden_context") in self.parameters and self.context_parameter:
            raise ValueError(f"kubeflow.parameters: {self.context_parameter} is the contextParameter the operator sets")
        _check_bounds("kubeflow", self.timeout, self.poll_interval)
        return self
