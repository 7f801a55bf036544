"""A ModelDeployment track's model and pods: where the model lives, how a track's pods differ from
the shared template, autoscaling, and how fetched models are stored."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Annotated

from pydantic import Field, WithJsonSchema, model_validator

from modelwarden.api.common import DATA_KEY_PATTERN, LABEL_VALUE_PATTERN, NAME_PATTERN, ApiModel, cel_rules, cel_string
from modelwarden.api.duration import PositiveDuration
from modelwarden.contract import modeluri
from modelwarden.contract.modeluri import URI_PATTERN

ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
OPERATOR_ENV = frozenset({"MODEL_NAME", "MODEL_VERSION", "MODEL_TRACK", "MODEL_URI", "MODEL_PATH", "PORT"})


class KeyRef(ApiModel):
    """A key of a Secret or ConfigMap in the namespace (core/v1 SecretKeySelector / ConfigMapKeySelector)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """The object's name."""
    key: str = Field(min_length=1, max_length=253, pattern=DATA_KEY_PATTERN)
    """The key."""
    optional: bool | None = None
    """Whether the container starts without it."""


class FieldRef(ApiModel):
    """A field of the pod (core/v1 ObjectFieldSelector), e.g. metadata.name."""

    field_path: str = Field(min_length=1, max_length=256)
    """The field's path."""
    api_version: str | None = Field(default=None, max_length=64)
    """Schema version of the path (v1)."""


class ResourceFieldRef(ApiModel):
    """A container's resource (core/v1 ResourceFieldSelector), e.g. limits.memory."""

    resource: str = Field(min_length=1, max_length=256)
    """The resource."""
    container_name: str | None = Field(default=None, max_length=63)
    """The container (default: this one)."""
    divisor: Quantity | None = None
    """Output unit."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from (core/v1 EnvVarSource)."""

    secret_key_ref: KeyRef | None = None
    """A Secret key."""
    config_map_key_ref: KeyRef | None = None
    """A ConfigMap key."""
    field_ref: FieldRef | None = None
    """A pod field."""
    resource_field_ref: ResourceFieldRef | None = None
    """A container resource."""


class EnvVar(ApiModel):
    """An environment variable (core/v1 EnvVar)."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    """Its name."""
    value: str | None = Field(default=None, max_length=32768)
    """Its value."""
    value_from: EnvVarSource | None = None
    """Where the value comes from instead."""


class TolerationOperator(str, Enum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(str, Enum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A toleration of a node taint (core/v1 Toleration)."""

    key: str | None = Field(default=None, max_length=316)
    """The taint key (empty with Exists: every taint)."""
    operator: TolerationOperator | None = None
    """Exists or Equal (default Equal)."""
    value: str | None = Field(default=None, max_length=63)
    """The taint value (Equal)."""
    effect: TaintEffect | None = None
    """The taint effect (empty: all)."""
    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated."""


# A resource.Quantity ("500m", "2Gi", 1): int-or-string, checked for real by the API server when
# it lands in the child Deployment.
Quantity = Annotated[int | str, WithJsonSchema({"x-kubernetes-int-or-string": True})]
# An alias (models:/NAME@ALIAS) or a stage (models:/NAME/Production): the served version follows it.
MOVING_MODEL_URI = r"^models:/[^/@]+(@.+|/.*[^0-9].*)$"


class ResourceRequirements(ApiModel):
    """Container resources (as core/v1 ResourceRequirements): requests and limits by resource name."""

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """Minimum resources, e.g. cpu: 500m, memory: 1Gi."""
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """Maximum resources, e.g. nvidia.com/gpu: 1."""


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler for the track (autoscaling/v2, CPU utilisation)."""

    model_config = cel_rules(("self.maxReplicas >= self.minReplicas",
                              "autoscaling.maxReplicas must be at least autoscaling.minReplicas", ".maxReplicas"))

    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Fewest replicas."""
    max_replicas: int = Field(ge=1, le=1000)
    """Most replicas."""
    target_cpu: int = Field(default=80, ge=1, le=100, alias="targetCPU")
    """Average CPU utilisation (percent of requests) the HPA aims for."""


# The CEL rules of every track (a subclass with rules of its own repeats them: pydantic keeps one
# json_schema_extra per class).
TRACK_RULES: tuple[tuple[str, str, str], ...] = (
    ("has(self.version) || self.modelUri.startsWith('models:/')",
     "version is required unless modelUri is an MLflow models:/ URI (then it is the registered model version)",
     ".version"),
    (f"!has(self.version) || !self.modelUri.matches({cel_string(MOVING_MODEL_URI)})",
     "version must be omitted when modelUri is an MLflow alias or stage: the served version follows it",
     ".version"),
    ("!has(self.env) || self.env.all(e, !(e.name in ['MODEL_NAME', 'MODEL_VERSION', 'MODEL_TRACK', 'MODEL_URI', 'MODEL_PATH', 'PORT']))",
     "env may not set MODEL_NAME, MODEL_VERSION, MODEL_TRACK, MODEL_URI, MODEL_PATH or PORT: the operator sets them",
     ".env"),
    ("!has(self.sha256) || !(self.modelUri.startsWith('/') || self.modelUri.startsWith('file:') "
     "|| self.modelUri.startsWith('pvc:'))",
     "sha256 applies to fetched models (s3, gs, https, models, runs), not to local or pvc paths", ".sha256"),
)


class TrackSpec(ApiModel):
    """What one track serves, and how its pods differ from the shared template."""

    model_config = cel_rules(*TRACK_RULES)

    version: str | None = Field(default=None, min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)
    """The model version served by this track; becomes the `version` label on every metric. Omitted for an
    MLflow models:/ URI, it is the registered model version the URI resolves to (required otherwise)."""
    model_uri: str = Field(min_length=1, max_length=2048, pattern=URI_PATTERN)
    """Where the model lives: an absolute path or file:///path (in the image or a volume of the template),
    pvc://CLAIM/PATH, s3://BUCKET/KEY, gs://BUCKET/KEY, https://..., or MLflow models:/NAME/VERSION,
    models:/NAME@ALIAS, models:/NAME/STAGE, runs:/RUN_ID/PATH (docs/serving.md)."""
    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$")
    """Expected SHA-256 of the model file; a fetched model that differs is refused (ModelFetchFailed)."""
    replicas: int = Field(default=1, ge=0, le=1000)
    """Pods for this track (with autoscaling, the HPA's minReplicas and maxReplicas decide instead)."""
    autoscaling: Autoscaling | None = None
    """Scale the track with a HorizontalPodAutoscaler instead of a fixed replica count."""
    image: str | None = Field(default=None, min_length=1, max_length=1024)
    """Image of the model-server container for this track only (a canary can change it)."""
    resources: ResourceRequirements | None = None
    """Resources of the model-server container for this track (over the template's; GPUs as limits)."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment of the model-server container for this track (core/v1 EnvVar; a name set here wins)."""
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Node labels for this track's pods (merged over the template's)."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Tolerations for this track's pods (added to the template's)."""

    @model_validator(mode="after")
    def _uri_names_a_model(self) -> "TrackSpec":
        """What the schema's pattern and CEL cannot say: the URI's parts (bucket, claim, registry form)."""
        try:
            uri = modeluri.parse(self.model_uri)
        except modeluri.InvalidModelUri as exc:
            raise ValueError(f"modelUri: {exc}") from None
        if self.version is None and uri.scheme is not modeluri.Scheme.MLFLOW_MODEL:
            raise ValueError("version is required unless modelUri is an MLflow models:/ URI")
        if self.version is not None and uri.moving:
            raise ValueError("version must be omitted when modelUri is an MLflow alias or stage")
        if reserved := sorted({e.name for e in self.env} & OPERATOR_ENV):
            raise ValueError(f"env may not set {', '.join(reserved)}: the operator sets them")
        return self


class LocalObjectReference(ApiModel):
    """An object in the resource's namespace, by name."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """Its name."""


class StorageSpec(ApiModel):
    """Where fetched models come from and how they are fetched (docs/serving.md)."""

    secret_ref: LocalObjectReference | None = None
    """A Secret whose keys are the standard environment of the stores, given to the storage initializer:
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION (S3 and compatible),
    MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN, MLFLOW_S3_ENDPOINT_URL (MLflow), gcs-credentials.json (GCS).
    The operator reads MLFLOW_TRACKING_URI/TOKEN from it to resolve aliases only when the Secret is labelled
    modelwarden.io/policy-use: "true"."""
    max_bytes: int = Field(default=10 * 1024**3, ge=1, le=1024**4)
    """Largest artifact (all files) the storage initializer downloads; also the size of the model volume."""
    resolve_interval: PositiveDuration = timedelta(minutes=1)
    """How often MLflow aliases and stages are looked up again; a moved alias starts a rollout."""


