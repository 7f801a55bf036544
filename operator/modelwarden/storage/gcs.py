"""`gs://BUCKET/KEY` on Google Cloud Storage (or an emulator), with google-cloud-storage.

Credentials: the key file GOOGLE_APPLICATION_CREDENTIALS names when it exists (the operator mounts
the store Secret's gcs-credentials.json there); else none when STORAGE_EMULATOR_HOST points at an
emulator; else the environment's default credentials (workload identity, the metadata server),
and anonymous access to a public bucket when there are none.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelwarden.contract.modeluri import ModelUri
from modelwarden.storage.base import FetchError, Fetched, FetchLimits
from modelwarden.storage.local import PROFILE_FILE, Download, sibling_profile, single_object_name

READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
CREDENTIALS_VARIABLE = "GOOGLE_APPLICATION_CREDENTIALS"
# Reading objects bills no project; the library's own anonymous client uses this placeholder.
NO_PROJECT = "<none>"
TIMEOUT_SECONDS = (10, 60)


def make_client() -> Any:
    """A storage client with the credentials the module docstring describes."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    key_file = os.environ.get(CREDENTIALS_VARIABLE)
    if key_file and Path(key_file).is_file():
        credentials, project = google.auth.load_credentials_from_file(key_file, scopes=[READ_ONLY_SCOPE])
        return storage.Client(project=project or NO_PROJECT, credentials=credentials)
    if os.environ.get(EMULATOR_VARIABLE):
        return storage.Client(project=NO_PROJECT, credentials=AnonymousCredentials())
    with _without_env(CREDENTIALS_VARIABLE):  # a named file that is absent would stop default() from looking further
        try:
            credentials, project = google.auth.default(scopes=[READ_ONLY_SCOPE])
        except DefaultCredentialsError:
            return storage.Client.create_anonymous_client()
    return storage.Client(project=project or NO_PROJECT, credentials=credentials)


@contextmanager
def _without_env(name: str) -> Iterator[None]:
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


class GcsStore:
    """A single object (renamed for the server when it is a model, with its sibling profile.json),
    or every object under KEY/ when no object is named KEY."""

    def __init__(self, client: Any = None):
        self._client = client

    def fetch(self, uri: ModelUri, dest: Path, limits: FetchLimits) -> Fetched:
        bucket_name, key = uri.location, uri.path
        where = f"gs://{bucket_name}/{key}"
        download = Download(dest, limits, where)
        with _reasons(where, bucket_name):
            client = self._client or make_client()
            bucket = client.bucket(bucket_name)
            blob = None if key.endswith("/") else bucket.get_blob(key, timeout=TIMEOUT_SECONDS)
            if blob is not None:
                name = single_object_name(key)
                download.expect(blob.size)
                _download(download, name, blob)
                profile = _optional_blob(bucket, sibling_profile(key)) if name != PROFILE_FILE else None
                if profile is not None:
                    download.expect(profile.size)
                    _download(download, PROFILE_FILE, profile)
                return download.result(model_file=name)
            prefix = key.rstrip("/") + "/"
            blobs = [b for b in client.list_blobs(bucket, prefix=prefix, timeout=TIMEOUT_SECONDS) if not b.name.endswith("/")]
            if not blobs:
                raise FetchError(f"no object or prefix {where}")
            download.expect(sum(b.size or 0 for b in blobs))
            for item in blobs:
                _download(download, item.name[len(prefix):], item)
            return download.result()


def _download(download: Download, relative: str, blob: Any) -> None:
    """Stream one object through the budget; the library checks its crc32c at the end."""
    with download.open(relative) as sink:
        blob.download_to_file(sink, timeout=TIMEOUT_SECONDS)


def _optional_blob(bucket: Any, name: str | None) -> Any:
    """The sibling profile when it exists and these credentials may read it, else None."""
    from google.api_core import exceptions as api

    if name is None:
        return None
    try:
        return bucket.get_blob(name, timeout=TIMEOUT_SECONDS)
    except (api.Forbidden, api.Unauthorized):
        return None


@contextmanager
def _reasons(where: str, bucket: str) -> Iterator[None]:
    """The client library's errors as one line naming the location and the reason, never a credential."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

    try:
        yield
    except FetchError:
        raise
    except api.NotFound:  # get_blob answers None for a missing object: this is the bucket
        raise FetchError(f"{where}: no such bucket {bucket!r}") from None
    except (api.Forbidden, api.Unauthorized) as error:
        raise FetchError(f"{where}: access denied (HTTP {error.code}); check the credentials "
                         f"({CREDENTIALS_VARIABLE}) and the bucket's IAM policy") from None
    except api.GoogleAPICallError as error:
        raise FetchError(f"{where}: the store answered HTTP {error.code} {type(error).__name__}") from None
    except auth.GoogleAuthError as error:
        raise FetchError(f"{where}: cannot obtain credentials ({type(error).__name__}); check {CREDENTIALS_VARIABLE}") from None
    except DataCorruption:
        raise FetchError(f"{where}: the download failed its checksum (corrupted in transit)") from None
    except InvalidResponse as error:
        status = getattr(getattr(error, "response", None), "status_code", "?")
        raise FetchError(f"{where}: the store answered HTTP {status} during the download") from None
    except requests.exceptions.SSLError:
        raise FetchError(f"{where}: TLS verification of the store failed") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        raise FetchError(f"{where}: cannot reach the store ({type(error).__name__})") from None
