"""Types shared by both custom resources."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

# A Kubernetes object name (DNS-1123 subdomain, as used for ConfigMaps, Secrets and our resources).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label value: model names and versions become Prometheus/Kubernetes label values.
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
# A ModelDeployment's name names Services (`<name>`, `<name>-stable|canary|shadow`): a DNS-1035
# label (a letter first, no dots) short enough that the longest child name fits 63 characters.
MODEL_DEPLOYMENT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MODEL_DEPLOYMENT_NAME_MAX = 63 - len("-stable")
# A DriftPolicy's name names its retraining CronJob `<name>-retrain` (Kubernetes allows 52
# characters for a CronJob) and Jobs `<name>-retrain-<8 hex>` (63).
DRIFT_POLICY_NAME_MAX = 52 - len("-retrain")
# A key of a Secret's or ConfigMap's data.
DATA_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
# A Prometheus label name.
PROMETHEUS_LABEL_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# An HTTP header name (an RFC 9110 token).
HEADER_NAME_PATTERN = r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"


class ApiModel(BaseModel):
    """Base for every spec/status part: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict as it appears in a manifest (camelCase, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel_string(text: str) -> str:
    """A CEL string literal (double-quoted) of any text, e.g. a regular expression."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cel_rules(*rules: tuple[str, str, str]) -> ConfigDict:
    """CEL rules as (rule, message, fieldPath) triples; the message always names the field."""
    return ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": rule, "message": message, **({"fieldPath": path} if path else {})}
                for rule, message, path in rules
            ]
        }
    )


class Track(str, Enum):
    """A serving track of a ModelDeployment."""

    STABLE = "stable"
    CANARY = "canary"
    SHADOW = "shadow"


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A standard Kubernetes condition, usable with `kubectl wait --for=condition=TYPE`."""

    type: str = Field(max_length=316)
    """The condition's type, e.g. Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(default="", max_length=1024)
    """A CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """A human-readable explanation."""
    last_transition_time: datetime | None = None
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The spec generation this condition was computed from."""


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def condition_true(conditions: list[Condition], type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.status == ConditionStatus.TRUE


def set_condition(conditions: list[Condition], type_: str, value: bool, reason: str, message: str, now: datetime,
                  generation: int | None) -> list[Condition]:
    """The conditions with one set (in place of the old one, else appended); lastTransitionTime
    moves only when its status flips, as Kubernetes conditions do."""
    wanted = ConditionStatus.TRUE if value else ConditionStatus.FALSE
    current = find_condition(conditions, type_)
    moved = current is None or current.status != wanted or current.last_transition_time is None
    condition = Condition(type=type_, status=wanted, reason=reason, message=message, observed_generation=generation,
                          last_transition_time=now if moved else current.last_transition_time)  # type: ignore[union-attr]
    if current is None:
        return [*conditions, condition]
    return [condition if c is current else c for c in conditions]


class SecretKeyRef(ApiModel):
    """A key in a Secret in the resource's namespace (secrets are never given inline)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """The Secret's name."""
    key: str = Field(min_length=1, max_length=253, pattern=DATA_KEY_PATTERN)
    """The key within the Secret's data."""


class ConfigMapKeyRef(ApiModel):
    """A key in a ConfigMap in the resource's namespace."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """The ConfigMap's name."""
    key: str = Field(default="profile.json", min_length=1, max_length=253, pattern=DATA_KEY_PATTERN)
    """The key within the ConfigMap's data."""


# A core/v1 PodTemplateSpec kept as given: the only part of our API that preserves unknown
# fields, because the API server validates it for real when it lands in a child Deployment/Job.
PodTemplateSpec = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class BasicAuth(ApiModel):
    """HTTP basic auth from one Secret."""

    secret_name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """Secret holding the credentials."""
    username_key: str = Field(default="username", max_length=253, pattern=DATA_KEY_PATTERN)
    """Key of the user name."""
    password_key: str = Field(default="password", max_length=253, pattern=DATA_KEY_PATTERN)
    """Key of the password."""
