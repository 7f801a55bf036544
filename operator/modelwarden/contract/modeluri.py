"""Model URIs: where a track's artifact lives, parsed once for the API, the operator, the pod
builder and `modelwarden fetch-model`.

A URI is local (a path in the image or a volume the template mounts: no scheme or `file://`), on
a PersistentVolumeClaim (`pvc://CLAIM/PATH`: mounted read-only, nothing downloaded), fetched by
the pod's storage initializer (`s3://`, `gs://`, `https://`), or in an MLflow registry
(`models:/NAME/VERSION`, `models:/NAME@ALIAS`, `models:/NAME/STAGE`, `runs:/RUN_ID/PATH`).
An alias or a stage moves; the operator resolves it to a concrete version (`models:/NAME/N`)
before anything is deployed, so a pod never fetches a moving target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote, urlparse


class Scheme(str, Enum):
    LOCAL = "file"
    PVC = "pvc"
    S3 = "s3"
    GCS = "gs"
    HTTPS = "https"
    MLFLOW_MODEL = "models"
    MLFLOW_RUN = "runs"


SCHEMES = tuple(s.value for s in Scheme)
# One regular expression for the CRD (a CEL-free OpenAPI pattern) and for parse(): a scheme we
# know, or an absolute path.
URI_PATTERN = r"^(/|file:///|pvc://|s3://|gs://|https://|models:/|runs:/)\S+$"
_NAME = r"[^/@\s]+"
_MODELS = re.compile(rf"^models:/(?P<name>{_NAME})(?:/(?P<ref>[^/@\s]+)|@(?P<alias>[^/@\s]+))$")
_RUNS = re.compile(r"^runs:/(?P<run>[0-9A-Za-z_-]+)(?:/(?P<path>\S*))?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


class InvalidModelUri(ValueError):
    """A URI that names no artifact we can serve; the message says which part is wrong."""


@dataclass(frozen=True)
class ModelUri:
    """A parsed model URI. `location` is the bucket, claim, host or registered model name; `path`
    the key, path in the claim, URL path or run artifact path; `reference` a registry version,
    alias or stage."""

    uri: str
    scheme: Scheme
    location: str = ""
    path: str = ""
    reference: str = ""
    alias: bool = False

    @property
    def fetched(self) -> bool:
        """Downloaded into the pod by the storage initializer (not a path the pod already has)."""
        return self.scheme not in (Scheme.LOCAL, Scheme.PVC)

    @property
    def registry(self) -> bool:
        """Named in an MLflow registry or tracking server: the operator resolves it."""
        return self.scheme in (Scheme.MLFLOW_MODEL, Scheme.MLFLOW_RUN)

    @property
    def moving(self) -> bool:
        """An alias or a stage: what it names changes without the spec changing."""
        return self.scheme is Scheme.MLFLOW_MODEL and (self.alias or not self.reference.isdigit())

    @property
    def registry_version(self) -> str | None:
        """The registered model version a concrete `models:/NAME/N` names."""
        if self.scheme is Scheme.MLFLOW_MODEL and not self.moving:
            return self.reference
        return None

    @property
    def printable(self) -> str:
        """The URI without user info, query string or fragment: safe to log or report."""
        return printable(self.uri)


def concrete_model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def parse(uri: str) -> ModelUri:
    """Parse a model URI or raise InvalidModelUri naming what is wrong.

    Messages quote the URI as printable() shows it: the raw one may carry credentials or a
    signed query, and the message reaches events, conditions and logs."""
    if not uri or uri != uri.strip():
        raise InvalidModelUri("model URI is empty or has surrounding whitespace")
    if uri.startswith("/"):
        return ModelUri(uri, Scheme.LOCAL, path=uri)
    parsed = urlparse(uri)
    shown = repr(printable(uri))
    scheme = parsed.scheme
    if scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise InvalidModelUri(f"{shown}: a file URI is file:///ABSOLUTE/PATH")
        return ModelUri(uri, Scheme.LOCAL, path=unquote(parsed.path))
    if scheme == "pvc":
        claim, path = parsed.netloc, parsed.path.lstrip("/")
        if not _DNS_LABEL.match(claim) or len(claim) > 253:
            raise InvalidModelUri(f"{shown}: pvc://CLAIM/PATH needs a PersistentVolumeClaim name")
        if ".." in path.split("/"):
            raise InvalidModelUri(f"{shown}: the path inside the claim may not contain '..'")
        return ModelUri(uri, Scheme.PVC, location=claim, path=path)
    if scheme in ("s3", "gs"):
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if not _BUCKET.match(bucket):
            raise InvalidModelUri(f"{shown}: {scheme}://BUCKET/KEY needs a valid bucket name")
        if not key:
            raise InvalidModelUri(f"{shown}: {scheme}://BUCKET/KEY needs the object key or prefix of the model")
        return ModelUri(uri, Scheme(scheme), location=bucket, path=key)
    if scheme == "https":
        if not parsed.hostname:
            raise InvalidModelUri(f"{shown}: an https URL needs a host")
        if parsed.username or parsed.password:
            raise InvalidModelUri(f"{shown}: credentials in the URL are not allowed (use spec.storage.secretRef)")
        return ModelUri(uri, Scheme.HTTPS, location=parsed.netloc, path=parsed.path)
    if scheme == "models":
        match = _MODELS.match(uri)
        if not match:
            raise InvalidModelUri(f"{shown}: use models:/NAME/VERSION, models:/NAME/STAGE or models:/NAME@ALIAS")
        if match["alias"]:
            return ModelUri(uri, Scheme.MLFLOW_MODEL, location=match["name"], reference=match["alias"], alias=True)
        return ModelUri(uri, Scheme.MLFLOW_MODEL, location=match["name"], reference=match["ref"])
    if scheme == "runs":
        match = _RUNS.match(uri)
        if not match:
            raise InvalidModelUri(f"{shown}: use runs:/RUN_ID/ARTIFACT_PATH")
        return ModelUri(uri, Scheme.MLFLOW_RUN, location=match["run"], path=match["path"] or "")
    if scheme in ("http",):
        raise InvalidModelUri(f"{shown}: plain http is not allowed for model artifacts; use https://")
    raise InvalidModelUri(f"{shown}: unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}:// or an absolute path")


@dataclass(frozen=True)
class Resolution:
    """What a track's URI named when the operator looked: a registry alias or stage pinned to the
    concrete version deployed, so a rollback returns to exactly that version."""

    uri: str  # as the spec wrote it
    resolved_uri: str  # what the pods fetch: models:/NAME/N, runs:/ID/PATH, or `uri` itself
    model_version: str | None = None  # the MLflow registered model version
    run_id: str | None = None  # the MLflow run that produced it


def printable(uri: str) -> str:
    """The URI fit for a log line, an error or a condition: without user info, query string or
    fragment (a presigned URL's query holds its signature)."""
    shown = uri.split("#", 1)[0].split("?", 1)[0]
    netloc = urlparse(shown).netloc
    if "@" in netloc:
        shown = shown.replace(netloc, netloc.rpartition("@")[2], 1)
    return shown

