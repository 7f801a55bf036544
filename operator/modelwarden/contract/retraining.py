"""The retraining Job contract (docs/driftpolicy.md, "The retraining Job contract").

In: the context as MODELWARDEN_* environment variables and as one JSON file (CONTEXT_FILE, the
pod's CONTEXT_ANNOTATION mounted through the downward API, so no ConfigMap has to be kept in sync).
Out: the model it produced, either as the JSON {"modelUri": ..., "version": ...} in its container's
termination message, or as an MLflow model version tagged BREACH_ID_TAG=<MODELWARDEN_BREACH_ID>.
Pure: parsing only, so a bad result is refused the same way wherever it is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from modelwarden.contract import modeluri
from modelwarden.contract.kubernetes import GROUP

BREACH_ID_TAG = f"{GROUP}/breach-id"  # on the MLflow model version a retraining Job registers
CONTEXT_ANNOTATION = f"{GROUP}/retrain-context"  # on the Job's pod template: the context JSON
CONTEXT_DIRECTORY = "/etc/modelwarden/retrain"
CONTEXT_FILE = f"{CONTEXT_DIRECTORY}/context.json"
RESULT_FILE = "/dev/termination-log"  # the container's terminationMessagePath (Kubernetes' default)
MAX_RESULT_BYTES = 4096  # Kubernetes keeps at most 4096 bytes of a termination message
MAX_URI_LENGTH = 2048  # what spec.<track>.modelUri allows: a candidate must be a valid track
_VERSION = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")  # a label value: it labels every metric


@dataclass(frozen=True)
class ReportedModel:
    """A retraining Job's valid result."""

    model_uri: str
    version: str
    model_version: str | None = None
    run_id: str | None = None
    reported_by: str = "terminationMessage"


class ResultPending(RuntimeError):
    """A result that is not ready yet (an MLflow version still registering): read again later."""


class InvalidResult(ValueError):
    """A result that names no usable model; the message says why, for the RetrainResultInvalid Event."""


def breach_id(namespace: str, job_name: str) -> str:
    """The identity a retraining run is told and tags its model with: unique per cluster namespace,
    deterministic per breach (the Job name already is)."""
    return f"{namespace}/{job_name}"


def parse_termination_message(message: str) -> ReportedModel:
    """{"modelUri": "...", "version": "...", "runId"?: "..."}: a concrete model, never a moving alias
    (the candidate must stay the model that was trained)."""
    if len(message.encode()) > MAX_RESULT_BYTES:
        raise InvalidResult(f"the termination message is longer than {MAX_RESULT_BYTES} bytes")
    try:
        body = json.loads(message)
    except ValueError as exc:
        raise InvalidResult(f"the termination message is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(body, dict):
        raise InvalidResult("the termination message must be a JSON object with modelUri and version")
    uri, version, run_id = body.get("modelUri"), body.get("version"), body.get("runId")
    if not isinstance(uri, str) or not uri:
        raise InvalidResult("the termination message has no modelUri (a string)")
    try:
        parsed = modeluri.parse(uri)
    except modeluri.InvalidModelUri as exc:
        raise InvalidResult(f"modelUri: {exc}") from None
    if len(uri) > MAX_URI_LENGTH or not re.match(modeluri.URI_PATTERN, uri):
        raise InvalidResult(f"modelUri must be at most {MAX_URI_LENGTH} characters without whitespace, starting with "
                            "/, file:///, pvc://, s3://, gs://, https://, models:/ or runs:/ (what spec.*.modelUri takes)")
    if parsed.moving:
        raise InvalidResult(f"modelUri {modeluri.printable(uri)!r} is an alias or stage: report the concrete version "
                            f"(models:/{parsed.location}/N)")
    if version is None and parsed.registry_version:
        version = parsed.registry_version
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidResult("version must be a label value: 1-63 letters, digits, '-', '_' or '.', starting and "
                            "ending with a letter or digit")
    if run_id is not None and not (isinstance(run_id, str) and re.fullmatch(r"[0-9A-Za-z_-]{1,64}", run_id)):
        raise InvalidResult("runId must be an MLflow run id")
    return ReportedModel(uri, version, parsed.registry_version, run_id)


def from_model_version(found: dict[str, Any]) -> ReportedModel:
    """An MLflow model version (as the REST API answers it) tagged with the breach id."""
    name, number = found.get("name"), found.get("version")
    if not isinstance(name, str) or not name or not isinstance(number, str) or not number.isdigit():
        raise InvalidResult("the MLflow model version tagged with this breach id has no name or version")
    if found.get("status") == "PENDING_REGISTRATION":
        raise ResultPending(f"MLflow model version {name}/{number} is still registering")
    if found.get("status") not in (None, "READY"):
        raise InvalidResult(f"MLflow model version {name}/{number} is {found.get('status')}, not READY")
    return ReportedModel(modeluri.concrete_model_uri(name, number), number, number, found.get("run_id") or None, "mlflow")


def context_document(values: dict[str, Any]) -> str:
    """The context file's content: the same values as the environment, typed (lists stay lists)."""
    return json.dumps(values, separators=(",", ":"), sort_keys=True)
