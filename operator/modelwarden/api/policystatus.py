"""The status of a DriftPolicy: its phase, the evaluations and the actions taken."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import Field

from modelwarden.api.common import ApiModel, Condition

class DriftPolicyPhase(str, Enum):
    """The state of a DriftPolicy."""

    PENDING = "Pending"  # means: not evaluated yet
    PASSING = "Passing"  # means: the last evaluation passed every check
    WARNING = "Warning"  # means: the last evaluation passed, with a drift distance at drift.warnThreshold; never acts
    FAILING = "Failing"  # means: the last evaluation failed at least one check
    INSUFFICIENT_DATA = "InsufficientData"  # means: too few samples to judge; never acts
    ERROR = "Error"  # means: the evaluation could not run (query failed); never acts
    SUSPENDED = "Suspended"  # means: spec.suspend is true


class Verdict(str, Enum):
    """The outcome of one check or one evaluation."""

    PASS = "Pass"
    WARNING = "Warning"  # a pass with a distance at the drift's warnThreshold: shown, never acts
    FAIL = "Fail"
    INSUFFICIENT_DATA = "InsufficientData"
    ERROR = "Error"


PASSING = frozenset({Verdict.PASS, Verdict.WARNING})  # a Warning passes: it is shown, never acted on


class CheckResult(ApiModel):
    """One check's outcome with its numbers."""

    check: str
    """Check name, e.g. drift/age, performance/accuracy, custom/p99."""
    verdict: Verdict
    """Pass, Fail, InsufficientData or Error."""
    value: float | None = None
    """Measured value."""
    threshold: float | None = None
    """Bound it was compared with."""
    samples: int | None = None
    """Observations behind the value."""
    lower_bound: float | None = None
    """A proportion's or mean error's lower confidence bound at the check's level: a max fails only when this is
    above it. For a comparison: the lower end of the effect's two-sided interval."""
    upper_bound: float | None = None
    """A proportion's or mean error's upper confidence bound at the check's level: a min fails only when this is
    below it. For a comparison: the upper end of the effect's two-sided interval."""
    effect: float | None = None
    """A comparison's effect: the track's proportion minus the baseline track's."""
    message: str = ""
    """A one-line human explanation."""
    reason: str | None = None
    """Why an Error, where something can act on it: BucketEdgesDiffer (the two sides' histograms have different
    bucket edges, so they cannot be compared; a candidate with such a profile is refused)."""


BUCKET_EDGES_DIFFER = "BucketEdgesDiffer"


class Evaluation(ApiModel):
    """One evaluation of the policy."""

    time: datetime
    """When it ran."""
    verdict: Verdict
    """Aggregated verdict."""
    samples: int | None = None
    """Observations in the current window."""
    duration_seconds: float | None = None
    """How long the evaluation took."""
    level: float | None = None
    """This look's share of spec.alpha, split evenly over its statistical checks."""
    results: list[CheckResult] = Field(default_factory=list, max_length=512)
    """Every check."""


class EvaluationSummary(ApiModel):
    """A compact past evaluation for the ring buffer."""

    time: datetime
    """When it ran."""
    verdict: Verdict
    """Aggregated verdict."""
    failed: list[str] = Field(default_factory=list, max_length=64)
    """Names of failing checks."""


class MetricWinner(ApiModel):
    """One comparison metric's answer to "which track is better?"."""

    metric: str
    """accuracy or error_rate."""
    winner: str
    """The better track (its name), or Inconclusive while the interval holds no difference."""
    effect: float
    """The policy's track's proportion minus the baseline's."""
    lower: float
    """Lower end of the effect's two-sided interval."""
    upper: float
    """Upper end of the effect's two-sided interval."""

    def summary(self) -> str:
        return f"{self.metric} {self.effect:+.3g} in [{self.lower:+.3g}, {self.upper:+.3g}]"


class Winner(ApiModel):
    """The A/B answer for one version: decided once, by the first look whose interval excludes no
    difference (levels from spec.alpha: at most alpha chance of naming a winner falsely)."""

    version: str | None = None
    """The version of the policy's track it is about."""
    winner: str = "Inconclusive"
    """The better track's name (the policy's track or comparison.track), or Inconclusive."""
    decided_at: datetime | None = None
    """The evaluation that decided it."""
    window_start: datetime | None = None
    """Where that evaluation's window began: the evidence is from after this instant."""
    level: float | None = None
    """The two-sided level of the deciding look's intervals."""
    metrics: list[MetricWinner] = Field(default_factory=list, max_length=2)
    """Each comparison metric at the latest look (at the deciding look once decided)."""


class ActionRecord(ApiModel):
    """An action the policy took."""

    type: str
    """Rollback, Retrain or Alert."""
    time: datetime
    """When."""
    reason: str = ""
    """Why."""


class RetrainResult(ApiModel):
    """The model a succeeded retraining Job produced (its termination message, or the MLflow model
    version tagged with its breach id): a candidate for ModelDeployments with spec.candidates."""

    model_uri: str = Field(max_length=2048)
    """The artifact (for MLflow: models:/NAME/VERSION)."""
    version: str = Field(max_length=63)
    """Its version label."""
    model_version: str | None = None
    """The MLflow registered model version."""
    run_id: str | None = None
    """The MLflow run that produced it."""
    reported_by: str
    """terminationMessage, workflowOutput (an Argo output parameter) or mlflow."""


class RetrainStatus(ApiModel):
    """The last retraining run (a Job, an Argo Workflow, an Airflow DAG run or a Kubeflow run)."""

    job_name: str
    """The run's name: the Job's or Workflow's; Airflow's dag_run_id and Kubeflow's display name are modelwarden.NAMESPACE.NAME."""
    backend: str | None = None
    """Where it runs: Job (when unset), ArgoWorkflow, Airflow or Kubeflow."""
    started_at: datetime
    """When it was created."""
    finished_at: datetime | None = None
    """When it finished."""
    outcome: str = "Running"
    """Running, Succeeded or Failed."""
    trigger: str = ""
    """Breach or Manual (scheduled runs belong to the CronJob)."""
    breach_id: str | None = None
    """NAMESPACE/JOB: the identity the Job was told (MODELWARDEN_BREACH_ID) and tags its MLflow model version with."""
    checks: list[str] = Field(default_factory=list, max_length=32)
    """The failing checks that launched it."""
    window_start: datetime | None = None
    """Start of the data window it was told about."""
    window_end: datetime | None = None
    """End of that window."""
    parent_version: str | None = None
    """The stable version serving when it launched."""
    result: RetrainResult | None = None
    """The model it produced, once it succeeded with a valid result."""
    result_error: str | None = Field(default=None, max_length=1024)
    """Why its result could not be used (RetrainResultInvalid): nothing rolls out."""
    follow_error: str | None = Field(default=None, max_length=1024)
    """Why its backend cannot say how it is doing now (Event RetrainUnobservable): it stays Running and is asked again."""


class DriftPolicyStatus(ApiModel):
    """Observed state of the policy, written only when it changes."""

    phase: DriftPolicyPhase = DriftPolicyPhase.PENDING
    """State of the policy."""
    observed_generation: int | None = None
    """The spec generation last evaluated."""
    last_evaluation: Evaluation | None = None
    """The latest evaluation with every check."""
    consecutive_failures: int = Field(default=0, ge=0)
    """Failing evaluations in a row (InsufficientData and Error neither count nor reset)."""
    evaluated_version: str | None = None
    """The version of the judged track at the last evaluation; another version starts a new failure streak."""
    looks: int = Field(default=0, ge=0)
    """Evaluations of evaluatedVersion that judged anything: spec.alpha is spent over them."""
    failing_since: datetime | None = None
    """Time of the first Fail of the current streak: identifies the breach (retraining Job names derive from it)."""
    evaluations: list[EvaluationSummary] = Field(default_factory=list, max_length=50)
    """Recent evaluations, newest last (a bounded ring buffer)."""
    last_action: ActionRecord | None = None
    """The latest action."""
    last_retrain: RetrainStatus | None = None
    """The latest retraining Job."""
    last_alert_at: datetime | None = None
    """When an alert was last sent (for repeatInterval)."""
    retrain_token: str | None = None
    """The modelwarden.io/retrain annotation value last acted on (one Job per token)."""
    evaluate_token: str | None = None
    """The modelwarden.io/evaluate-now annotation value last acted on (one evaluation at once per token)."""
    winner: Winner | None = None
    """With spec.comparison: which track is better, for evaluatedVersion (condition Winner)."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready (evaluating), Breached (failureThreshold reached; cleared by a Pass), InvalidSpec, Winner (with
    spec.comparison: True once a track is better, reason Stable/Canary/Shadow; False while Inconclusive)."""
