"""Field types and checks of a DriftPolicy's sources and actions: URLs, HTTP headers, label
maps, the retraining Job's pod template and cron schedules, each checked at admission (schema
and CEL) and again by the typed model for the operator."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from croniter import croniter
from pydantic import AfterValidator, Field, WithJsonSchema

from modelwarden.api.common import HEADER_NAME_PATTERN, LABEL_VALUE_PATTERN, cel_string

# An http(s) URL without credentials in it (they belong in a Secret) and without whitespace.
URL_PATTERN = r"^https?://[^\s/?#@]+([/?#]\S*)?$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
# An email address (the item type of email.to): name@domain, at most 254 characters (RFC 5321).
EmailAddress = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)]
# An HTTP header value (bounded, so the API server can afford its CEL rules).
HeaderValue = Annotated[str, Field(max_length=4096)]
# A DNS-1123 label: container names.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A label key: an optional DNS-subdomain prefix and a name.
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


def header_rules(allow_authorization: bool) -> dict[str, Any]:
    """CEL rules for a map of HTTP headers: valid names, no line breaks in values (no header
    injection) and, where a Secret reference exists for it, no inline Authorization header."""
    rules = [
        {"rule": f"self.all(k, k.matches({cel_string(HEADER_NAME_PATTERN)}))",
         "message": "headers: names must be HTTP tokens (letters, digits and !#$%&'*+-.^_`|~)"},
        {"rule": "self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r'))",
         "message": "headers: values must not contain line breaks"},
    ]
    if not allow_authorization:
        rules.append({"rule": "self.all(k, k.lowerAscii() != 'authorization')",
                      "message": "headers: no Authorization header here: use bearerTokenSecretRef or basicAuth (credentials live in Secrets)"})
    return {"x-kubernetes-validations": rules}


def check_headers(headers: dict[str, str], allow_authorization: bool) -> dict[str, str]:
    for name, value in headers.items():
        if not re.fullmatch(HEADER_NAME_PATTERN, name):
            raise ValueError(f"header name {name!r} is not an HTTP token")
        if "\n" in value or "\r" in value:
            raise ValueError(f"header {name}: values must not contain line breaks")
        if not allow_authorization and name.lower() == "authorization":
            raise ValueError("no Authorization header here: use bearerTokenSecretRef or basicAuth")
    return headers


def _job_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(metadata) - {"labels", "annotations"})
    if unknown:
        raise ValueError(f"only labels and annotations may be set, not {unknown[0]} (the operator names the Job)")
    for key, value in (metadata.get("labels") or {}).items():
        if not re.fullmatch(LABEL_KEY_PATTERN, key) or not isinstance(value, str) \
                or (value and (len(value) > 63 or not re.fullmatch(LABEL_VALUE_PATTERN, value))):
            raise ValueError(f"labels: {key}={value!r} is not a valid Kubernetes label")
    return metadata


JobMetadata = Annotated[
    dict[str, Any],
    AfterValidator(_job_metadata),
    WithJsonSchema({
        "type": "object",
        "properties": {
            "labels": {"type": "object", "maxProperties": 64, "description": "Labels for the Job (valid Kubernetes labels).",
                       "additionalProperties": {"type": "string", "maxLength": 63, "pattern": f"^$|{LABEL_VALUE_PATTERN}"},
                       "x-kubernetes-validations": [{"rule": f"self.all(k, k.matches({cel_string(LABEL_KEY_PATTERN)}))",
                                                     "message": "labels: keys must be [prefix/]name, e.g. app.kubernetes.io/part-of"}]},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "Annotations for the Job."},
        },
    }),
]


def _job_pod_template(template: dict[str, Any]) -> dict[str, Any]:
    spec = template.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not containers or not isinstance(containers, list):
        raise ValueError("spec.containers: at least one container is required")
    for index, container in enumerate(containers):
        if not isinstance(container, dict) or not container.get("name") or not container.get("image"):
            raise ValueError(f"spec.containers[{index}]: name and image are required")
    if spec.get("restartPolicy", "Never") not in ("Never", "OnFailure"):
        raise ValueError("spec.restartPolicy: a Job's pods restart Never or OnFailure")
    return template


# A core/v1 PodTemplateSpec for a Job: kept as given (the API server validates it for real in the
# Job), but the parts a Job cannot do without are checked at admission.
JobPodTemplate = Annotated[
    dict[str, Any],
    AfterValidator(_job_pod_template),
    WithJsonSchema({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "required": ["spec"],
        "properties": {"spec": {
            "type": "object",
            "description": "A core/v1 PodSpec.",
            "x-kubernetes-preserve-unknown-fields": True,
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "description": "At least one container.", "items": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": True, "required": ["name", "image"],
                    "properties": {"name": {"type": "string", "maxLength": 63, "pattern": DNS_LABEL_PATTERN,
                                            "description": "Container name (a DNS label)."},
                                   "image": {"type": "string", "minLength": 1, "description": "Container image."}}}},
                "restartPolicy": {"type": "string", "enum": ["Never", "OnFailure"],
                                  "description": "Never (the default) or OnFailure: a Job's pods never restart Always."},
            },
        }},
    }),
]


def _cron_field(value: str, names: str | None = None) -> str:
    atom = f"(?:{value})" if names is None else f"(?:{value}|(?i:{names}))"
    item = rf"(?:\*|\?|{atom}(?:-{atom})?)(?:/[1-9][0-9]*)?"
    return rf"{item}(?:,{item})*"


# What a Kubernetes CronJob accepts (robfig/cron's standard parser, without @every and TZ=): five
# fields with their ranges, or a macro. Start > end of a range is left to the operator's check.
CRON_MACROS = ("yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly")
CRON_PATTERN = (r"^\s*(?:@(?:" + "|".join(CRON_MACROS) + r")|" + r"\s+".join([
    _cron_field(r"[0-5]?[0-9]"),
    _cron_field(r"[01]?[0-9]|2[0-3]"),
    _cron_field(r"0?[1-9]|[12][0-9]|3[01]"),
    _cron_field(r"0?[1-9]|1[0-2]", "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"),
    _cron_field(r"[0-6]", "sun|mon|tue|wed|thu|fri|sat"),
]) + r")\s*$")
_CRON_NAMES = {name: str(i) for names in (("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),)
               for i, name in enumerate(names, 1)} | {name: str(i) for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
CRON_MESSAGE = ("must be a cron expression of five fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or "
                "jan-dec, day of week 0-6 or sun-sat) or @yearly, @monthly, @weekly, @daily or @hourly")


def check_cron(schedule: str) -> str:
    """The schedule as a CronJob runs it: the admission pattern, ranges in order (Kubernetes
    refuses 5-1), and parsed by croniter to a next run (30 2 * would never fire)."""
    if not re.fullmatch(CRON_PATTERN, schedule):
        raise ValueError(CRON_MESSAGE)
    if not schedule.strip().startswith("@"):
        for field in schedule.split():
            for item in field.split(","):
                bounds = item.split("/")[0].split("-")
                if len(bounds) == 2:
                    low, high = (int(_CRON_NAMES.get(b.lower(), b)) for b in bounds)
                    if low > high:
                        raise ValueError(f"range {item} runs backwards: start must not be after end")
    try:
        croniter(schedule.strip(), datetime(2000, 1, 1)).get_next(datetime)
    except Exception as exc:  # croniter's errors (CroniterBadCronError, CroniterBadDateError) share no base
        raise ValueError(f"cron expression {schedule!r} never fires or cannot be read: {exc}") from None
    return schedule
