"""Generate CustomResourceDefinitions from the typed API models (never edit crds/ by hand).

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema:
every $ref inlined, no `anyOf` with null for optionals, boolean `exclusiveMinimum`, no
`additionalProperties: false` beside `properties` (unknown fields are pruned or, with strict
field validation, rejected by the API server), and no titles.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

from modelwarden.contract.kubernetes import GROUP, VERSION
from modelwarden.api.common import (
    DRIFT_POLICY_NAME_MAX,
    MODEL_DEPLOYMENT_NAME_MAX,
    MODEL_DEPLOYMENT_NAME_PATTERN,
    cel_string,
)
from modelwarden.api.duration import DURATION_PATTERN, format_duration
from modelwarden.api.driftpolicy import DriftPolicy, DriftPolicySpec, DriftPolicyStatus
from modelwarden.api.modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus

_DROP = {"title", "$defs"}
_TIMEDELTA = TypeAdapter(timedelta)


class _CrdDumper(yaml.SafeDumper):
    """PyYAML's safe dumper with its own plain string style: a library that restyles strings on
    yaml.SafeDumper for everyone (hera does, on import) cannot change the checked-in CRDs."""


_CrdDumper.add_representer(str, yaml.representer.SafeRepresenter.represent_str)


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = {**target, **node}  # the field's own description/default win over the class's
        return structural(merged, defs)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"unions are not structural: {branches}")
        return structural({**branches[0], **node}, defs)
    if "default" in node and node["default"] is None:
        del node["default"]
    if node.get("pattern") == DURATION_PATTERN and isinstance(node.get("default"), str):
        # pydantic encodes timedelta defaults as ISO 8601 ("PT5M"); the API speaks "5m".
        node["default"] = format_duration(_TIMEDELTA.validate_python(node["default"]))
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node and not isinstance(node[bound], bool):
            node["minimum" if bound == "exclusiveMinimum" else "maximum"] = node[bound]
            node[bound] = True
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if "properties" in node:
        node["properties"] = {k: structural(v, defs) for k, v in node["properties"].items()}
        node.setdefault("type", "object")
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = structural(node["additionalProperties"], defs)
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["x-kubernetes-preserve-unknown-fields"] = True  # a free-form dict (e.g. metadata)
    if "items" in node:
        node["items"] = structural(node["items"], defs)
    return {k: v for k, v in node.items() if k not in _DROP}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def _column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    column = {"name": name, "type": type_, "jsonPath": path, "description": description}
    return {**column, "priority": priority} if priority else column


AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since creation")


def _name_rule(rule: str, message: str) -> dict[str, str]:
    return {"rule": f"!has(self.metadata.name) || {rule}", "message": message, "fieldPath": ".metadata.name"}


# Rules on metadata.name (the only part of metadata a CRD may constrain): every child's name fits.
MODEL_DEPLOYMENT_NAME_RULES = [
    _name_rule(f"size(self.metadata.name) <= {MODEL_DEPLOYMENT_NAME_MAX}",
               f"metadata.name must be at most {MODEL_DEPLOYMENT_NAME_MAX} characters: the Services <name>-stable, "
               "<name>-canary and <name>-shadow must fit the 63 characters Kubernetes allows"),
    _name_rule(f"self.metadata.name.matches({cel_string(MODEL_DEPLOYMENT_NAME_PATTERN)})",
               "metadata.name must start with a letter and hold only lowercase letters, digits and '-' (no dots): "
               "it names Services, which are DNS-1035 labels"),
]
DRIFT_POLICY_NAME_RULES = [
    _name_rule(f"size(self.metadata.name) <= {DRIFT_POLICY_NAME_MAX}",
               f"metadata.name must be at most {DRIFT_POLICY_NAME_MAX} characters: the retraining CronJob "
               "<name>-retrain must fit the 52 characters Kubernetes allows a CronJob"),
]

RESOURCES: list[dict[str, Any]] = [
    {
        "kind": "ModelDeployment",
        "plural": "modeldeployments",
        "short_names": ["mdep"],
        "model": ModelDeployment,
        "spec": ModelDeploymentSpec,
        "status": ModelDeploymentStatus,
        "name_rules": MODEL_DEPLOYMENT_NAME_RULES,
        "columns": [
            _column("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "All tracks ready and no rolled-back version asked for"),
            _column("Phase", "string", ".status.phase", "Lifecycle phase"),
            _column("Stable", "string", ".status.stable.version", "Version served by the stable track"),
            _column("Canary", "string", ".status.canary.version", "Version served by the canary track"),
            _column("Weight", "integer", ".status.weights.canary", "Percent of traffic on the canary"),
            _column("Step", "string", ".status.step", "The canary step, N/M"),
            _column("Verdict", "string", ".status.verdict", "Worst last verdict of the policies judging what serves"),
            _column("SpecBehind", "string", '.status.conditions[?(@.type=="SpecBehind")].status',
                    "Stable serves a promoted version spec.stable does not name yet (modelwarden export-spec)"),
            _column("Candidate", "string", ".status.candidate.version", "The candidate in flight (spec.candidates)", priority=1),
            _column("Model", "string", ".spec.model", "Logical model name", priority=1),
            AGE,
        ],
    },
    {
        "kind": "DriftPolicy",
        "plural": "driftpolicies",
        "short_names": ["dpol"],
        "model": DriftPolicy,
        "spec": DriftPolicySpec,
        "status": DriftPolicyStatus,
        "name_rules": DRIFT_POLICY_NAME_RULES,
        "columns": [
            _column("Target", "string", ".spec.targetRef.name", "The ModelDeployment judged"),
            _column("Track", "string", ".spec.track", "The track judged"),
            _column("Phase", "string", ".status.phase", "State of the policy"),
            _column("Verdict", "string", ".status.lastEvaluation.verdict", "Verdict of the last evaluation"),
            _column("Failures", "integer", ".status.consecutiveFailures", "Consecutive failing evaluations"),
            AGE,
        ],
    },
]


def build_crd(resource: dict[str, Any]) -> dict[str, Any]:
    spec_schema = model_schema(resource["spec"])
    status_schema = model_schema(resource["status"])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{resource['plural']}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "modelwarden", "app.kubernetes.io/part-of": "modelwarden"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource["kind"],
                "listKind": f"{resource['kind']}List",
                "plural": resource["plural"],
                "singular": resource["kind"].lower(),
                "shortNames": resource["short_names"],
                "categories": ["modelwarden"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": resource["columns"],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (resource["model"].__doc__ or "").strip(),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object",
                                             "properties": {"name": {"type": "string", "maxLength": 253}}},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                            "x-kubernetes-validations": resource["name_rules"],
                        }
                    },
                }
            ],
        },
    }


def build_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD, in a stable order."""
    return {f"{r['plural']}.{GROUP}.yaml": build_crd(r) for r in RESOURCES}


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `modelwarden crds --write` from operator/modelwarden/api. Do not edit.\n"
    return header + yaml.dump(crd, Dumper=_CrdDumper, sort_keys=False, width=120, allow_unicode=True)
