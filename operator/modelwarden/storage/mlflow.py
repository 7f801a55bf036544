"""Fetching `models:/` and `runs:/` artifacts from an MLflow tracking server for `modelwarden fetch-model`.

Downloads go through mlflow's own `mlflow.artifacts.download_artifacts`, so whatever artifact store
sits behind the tracking server (proxied `mlflow-artifacts:/`, S3, GCS, ...) works without a
client of ours. Credentials are mlflow's environment variables (MLFLOW_TRACKING_URI,
MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD, MLFLOW_TRACKING_INSECURE_TLS, ...):
fetch-model is a one-shot process in one pod with one set of credentials (the store Secret as
envFrom), so the process-wide variables that rule out MlflowClient in the operator are right here.

What lands in DEST: the model directory's files (MLmodel, model.skops, ...), or a single file
artifact under its own name, plus `profile.json` — the run's, when the model version's run logged
one (`modelwarden profile --mlflow-run`) and the model directory has none of its own; for
`runs:/RUN/PATH`, a `profile.json` beside PATH in the run. Everything is downloaded into a
staging directory inside DEST (in the pod DEST is an emptyDir mount point whose parent sits on a
read-only root filesystem, so "beside DEST" cannot be written and DEST itself cannot be replaced),
checked against the limits, and only then moved into place: a refused artifact leaves nothing.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelwarden.contract.modeluri import ModelUri, Scheme
from modelwarden.storage.base import FetchError, Fetched, FetchLimits

PROFILE_FILE = "profile.json"
MLMODEL_FILE = "MLmodel"
STAGING_PREFIX = ".modelwarden-fetch-"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_URI_ENV = "MODELWARDEN_DEFAULT_MLFLOW_TRACKING_URI"
_SECRET_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")
_MAX_MESSAGE = 400


class MlflowStore:
    """An ArtifactStore for MLflow registry and run URIs; the tracking server from the environment."""

    def __init__(self, tracking_uri: str | None = None, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        # MODELWARDEN_DEFAULT_MLFLOW_TRACKING_URI: the operator's --mlflow-tracking-uri, which a
        # store Secret's MLFLOW_TRACKING_URI overrides (an env entry would win over envFrom).
        self.tracking_uri = (tracking_uri or env.get(TRACKING_URI_ENV, "") or env.get(DEFAULT_TRACKING_URI_ENV, "")).strip() or None
        secrets = [value for name in _SECRET_ENV if (value := env.get(name))]
        try:
            secrets.append(urlsplit(self.tracking_uri or "").password or "")
        except ValueError:
            pass
        self._secrets = tuple(s for s in secrets if s)

    def fetch(self, uri: ModelUri, dest: Path, limits: FetchLimits) -> Fetched:
        if uri.scheme not in (Scheme.MLFLOW_MODEL, Scheme.MLFLOW_RUN):
            raise FetchError(f"{uri.printable}: not an MLflow URI (models:/ or runs:/)")
        if not self.tracking_uri:
            raise FetchError(f"{uri.printable}: {TRACKING_URI_ENV} is not set: no MLflow tracking server to fetch from")
        try:
            return self._fetch(uri, Path(dest), limits)
        except FetchError as error:
            raise FetchError(self._one_line(str(error))) from None
        except Exception as error:  # mlflow, requests, OS and YAML errors alike: one line for the pod
            raise FetchError(self._one_line(f"{uri.printable}: {_describe(error)}")) from None

    def _fetch(self, uri: ModelUri, dest: Path, limits: FetchLimits) -> Fetched:
        import mlflow.artifacts  # seconds to import: only when an MLflow URI is fetched

        artifact, run_id, profile_path = self._locate(uri)
        profile_bytes = self._profile_size(run_id, profile_path) if run_id and profile_path else None
        listed = self._listed_bytes(artifact, uri) + (profile_bytes or 0)
        if listed > limits.max_bytes:
            raise FetchError(f"{uri.printable}: the artifact lists {listed} bytes, more than the limit of "
                             f"{limits.max_bytes} bytes; nothing was downloaded")
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(STAGING_PREFIX + "*"):  # left by a fetch that was killed
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
        try:
            if artifact is None:  # runs:/RUN_ID without a path: the run's whole artifact root
                local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(staging / "artifact"),
                                                                 tracking_uri=self.tracking_uri))
            else:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=str(staging / "artifact"),
                                                                 tracking_uri=self.tracking_uri))
            entries = {p.name: p for p in local.iterdir()} if local.is_dir() else {local.name: local}
            single = None if local.is_dir() else local.name
            if profile_bytes is not None and PROFILE_FILE not in entries:
                run_profile = Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=f"runs:/{run_id}/{profile_path}", dst_path=str(staging / "profile"),
                    tracking_uri=self.tracking_uri))
                entries[PROFILE_FILE] = run_profile
            files = sorted(rel for name, path in entries.items() for rel in _files(path, name))
            total = sum(_size(entries, rel) for rel in files)
            if total > limits.max_bytes:
                raise FetchError(f"{uri.printable}: {total} bytes downloaded, more than the limit of {limits.max_bytes} bytes")
            model_file = single or _model_file(local)
            digest = _sha256(entries, model_file) if model_file else None
            if limits.sha256:
                if model_file is None:
                    raise FetchError(f"{uri.printable}: no model file recognised (no sklearn flavour in MLmodel) "
                                     "to check the sha256 against")
                if digest != limits.sha256.lower():
                    raise FetchError(f"{uri.printable}: sha256 of {model_file} is {digest}, expected {limits.sha256.lower()}")
            for name, path in entries.items():
                _replace(path, dest / name)
            return Fetched(files=tuple(files), total_bytes=total, model_file=model_file, sha256=digest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _locate(self, uri: ModelUri) -> tuple[str | None, str | None, str | None]:
        """(artifact URI to download or None for a run's root, run id, run-relative profile path)."""
        if uri.scheme is Scheme.MLFLOW_RUN:
            path = uri.path.strip("/")
            beside = posixpath.join(posixpath.dirname(path), PROFILE_FILE) if path else None
            profile = beside if beside and beside != path else None
            return (f"runs:/{uri.location}/{path}" if path else None), uri.location, profile
        version = self._model_version(uri)
        status = getattr(version, "status", "READY") or "READY"
        if status != "READY":
            raise FetchError(f"{uri.printable}: version {version.version} of registered model {uri.location!r} is {status}, not READY")
        # Where the version's files are stored, not models:/NAME/N: download_artifacts would resolve
        # that through the process-wide registry URI, not the tracking server this store was given.
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return client.get_model_version_download_uri(uri.location, version.version), version.run_id or None, PROFILE_FILE

    def _model_version(self, uri: ModelUri) -> Any:
        """The ModelVersion a models:/ URI names now (the operator has usually pinned it already)."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        if uri.alias:
            return client.get_model_version_by_alias(uri.location, uri.reference)
        if uri.reference.isdigit():
            return client.get_model_version(uri.location, uri.reference)
        latest = uri.reference.lower() == "latest"
        with warnings.catch_warnings():  # stages are deprecated since MLflow 2.9, still served by 3.x
            warnings.simplefilter("ignore", FutureWarning)
            versions = client.get_latest_versions(uri.location, None if latest else [uri.reference])
        if not versions:
            raise FetchError(f"{uri.printable}: registered model {uri.location!r} has no version"
                             f"{'' if latest else f' in stage {uri.reference!r}'}")
        return max(versions, key=lambda v: int(v.version))

    def _profile_size(self, run_id: str, path: str) -> int | None:
        """The size of the run's profile artifact, or None when the run has none (or is gone: the
        profile is optional, the model version is what was asked for)."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        parent = posixpath.dirname(path)
        try:
            listing = (mlflow.artifacts.list_artifacts(artifact_uri=f"runs:/{run_id}/{parent}", tracking_uri=self.tracking_uri)
                       if parent else mlflow.artifacts.list_artifacts(run_id=run_id, tracking_uri=self.tracking_uri))
        except MlflowException as error:
            if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        for info in listing:
            if info.path == path and not info.is_dir:
                return int(info.file_size or 0)
        return None

    def _listed_bytes(self, artifact: str | None, uri: ModelUri) -> int:
        """What the server lists for the artifact, to refuse an oversize one before downloading.
        A single file lists nothing (its size is checked after the download)."""
        import mlflow.artifacts

        if artifact is None:
            return 0  # a run's whole root: checked after the download
        # Listed paths are relative to the model for models:/ and to the run for runs:/.
        root = artifact if uri.scheme is Scheme.MLFLOW_MODEL else f"runs:/{uri.location}"
        seen: dict[str, int] = {}
        pending, visited = [artifact], set()
        while pending:
            current = pending.pop()
            if current in visited:
                continue
            visited.add(current)
            for info in mlflow.artifacts.list_artifacts(artifact_uri=current, tracking_uri=self.tracking_uri):
                if info.is_dir:
                    pending.append(f"{root}/{info.path}")
                else:
                    seen[info.path] = int(info.file_size or 0)
        return sum(seen.values())

    def _one_line(self, message: str) -> str:
        """FetchError messages become termination messages and conditions: one line, bounded, no secret."""
        for secret in self._secrets:
            message = message.replace(secret, "***")
        message = " ".join(message.split())
        return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def _describe(error: BaseException) -> str:
    """MLflow's own message (e.g. RESOURCE_DOES_NOT_EXIST: ...), else the exception's type and text."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        code = getattr(error, "error_code", "")
        text = str(getattr(error, "message", "") or error)
        return f"{code}: {text}" if code and code not in text else text
    return f"{type(error).__name__}: {error}"


def _files(path: Path, name: str) -> Iterator[str]:
    if path.is_dir():
        for root, _, names in os.walk(path):
            for file in names:
                yield posixpath.join(name, Path(root, file).relative_to(path).as_posix())
    else:
        yield name


def _resolve(entries: Mapping[str, Path], rel: str) -> Path:
    top, _, rest = rel.partition("/")
    return entries[top] / rest if rest else entries[top]


def _size(entries: Mapping[str, Path], rel: str) -> int:
    return _resolve(entries, rel).stat().st_size


def _sha256(entries: Mapping[str, Path], rel: str) -> str:
    digest = hashlib.sha256()
    with _resolve(entries, rel).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_file(model_dir: Path) -> str | None:
    """The file an MLflow sklearn model loads: MLmodel's flavors.sklearn.pickled_model (model.skops
    by default since MLflow 3.x, model.pkl for pickle/cloudpickle), relative to the model dir."""
    import yaml

    mlmodel = model_dir / MLMODEL_FILE
    if not mlmodel.is_file():
        return None
    flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
    candidates = [(flavors.get("sklearn") or {}).get("pickled_model"), (flavors.get("python_function") or {}).get("model_path")]
    for name in candidates:
        if isinstance(name, str) and name:
            path = (model_dir / name).resolve()
            if path.is_file() and model_dir.resolve() in path.parents:
                return path.relative_to(model_dir.resolve()).as_posix()
    return None


def _replace(source: Path, target: Path) -> None:
    """Move into DEST, replacing what an earlier attempt left under the same name."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.replace(source, target)
