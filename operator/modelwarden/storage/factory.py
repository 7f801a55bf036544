"""Which store fetches a URI, and fetching all or nothing into a destination directory.

Stores are imported only when their scheme is asked for, so `fetch-model https://…` never pays
for boto3 or google-cloud-storage (nor fails on a missing one).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from modelwarden.contract.modeluri import ModelUri, Scheme
from modelwarden.storage.base import ArtifactStore, FetchError, Fetched, FetchLimits
from modelwarden.storage.local import file_sha256

# The store writes here, inside the destination, until the artifact is complete and verified.
STAGING_PREFIX = ".modelwarden-fetch-"


def store_for(uri: ModelUri) -> ArtifactStore:
    """The store that downloads `uri`; FetchError for a URI nothing downloads (pvc://)."""
    if uri.scheme is Scheme.S3:
        from modelwarden.storage.s3 import S3Store

        return S3Store()
    if uri.scheme is Scheme.GCS:
        from modelwarden.storage.gcs import GcsStore

        return GcsStore()
    if uri.scheme is Scheme.HTTPS:
        from modelwarden.storage.https import HttpsStore

        return HttpsStore()
    if uri.registry:
        from modelwarden.storage.mlflow import MlflowStore

        return MlflowStore()
    if uri.scheme is Scheme.LOCAL:
        from modelwarden.storage.local import LocalStore

        return LocalStore()
    raise FetchError(f"{uri.printable}: a {uri.scheme.value}:// model is mounted into the pod, not fetched")


def fetch(uri: ModelUri, dest: Path, limits: FetchLimits) -> Fetched:
    """Fetch `uri` into `dest`, all or nothing: a failed fetch leaves nothing new in `dest`.

    The store writes into a staging directory inside `dest` and its entries are renamed into
    place once the size and checksum hold. Inside, not next to it: in a pod `dest` is an emptyDir
    mount point, which cannot be replaced by a rename, under a read-only root filesystem.
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(f"{STAGING_PREFIX}*"):  # left by a fetch that was killed
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    except OSError as error:
        raise FetchError(f"{dest}: cannot write the model there: {error.strerror or error}") from None
    try:
        fetched = store_for(uri).fetch(uri, staging, limits)
        verify(uri, staging, fetched, limits)
        for entry in staging.iterdir():
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            entry.replace(target)
        return fetched
    except OSError as error:
        raise FetchError(f"{dest}: cannot write the model there: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def verify(uri: ModelUri, staging: Path, fetched: Fetched, limits: FetchLimits) -> None:
    """The whole artifact within the byte limit, and the model file's sha256 the one expected."""
    if fetched.total_bytes > limits.max_bytes:
        raise FetchError(f"{uri.printable}: artifact is larger than the limit of {limits.max_bytes} bytes")
    if not limits.sha256:
        return
    if fetched.model_file is None:
        raise FetchError(f"{uri.printable}: no model file was recognised to check the sha256 of "
                         "(a single object, or model.joblib, model.skops or model.pkl in the directory)")
    actual = fetched.sha256 or file_sha256(staging / fetched.model_file)
    if actual.lower() != limits.sha256.lower():
        raise FetchError(f"{uri.printable}: sha256 mismatch for {fetched.model_file}: "
                         f"expected {limits.sha256.lower()}, got {actual.lower()}")
