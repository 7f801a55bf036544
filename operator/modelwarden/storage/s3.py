"""`s3://BUCKET/KEY` on AWS S3 or any S3-compatible store (MinIO, Ceph, R2, moto…), with boto3.

Configured by the standard environment, which the operator passes from the store Secret:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or AWS_DEFAULT_REGION,
and AWS_ENDPOINT_URL (or MLflow's MLFLOW_S3_ENDPOINT_URL) for a store other than AWS, addressed
path-style because such stores rarely have per-bucket DNS names. Without any credentials the
requests go unsigned, which is what a public bucket wants.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelwarden.contract.modeluri import ModelUri
from modelwarden.storage.base import FetchError, Fetched, FetchLimits
from modelwarden.storage.local import CHUNK_BYTES, PROFILE_FILE, Download, sibling_profile, single_object_name

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60

NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
ACCESS_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidClientTokenId",
                 "InvalidSecurity", "RequestTimeTooSkewed"}
WRONG_REGION = {"301", "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}


def _first_env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name)), None)


def make_client() -> Any:
    """An S3 client from the environment (see the module docstring)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = _first_env(ENDPOINT_VARIABLES)
    session = boto3.session.Session(region_name=_first_env(REGION_VARIABLES))
    options: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
    if endpoint:
        options["s3"] = {"addressing_style": "path"}
    if session.get_credentials() is None:
        options["signature_version"] = UNSIGNED
    return session.client("s3", endpoint_url=endpoint, config=Config(**options))


class S3Store:
    """A single object (renamed for the server when it is a model, with its sibling profile.json),
    or every object under KEY/ when no object is named KEY."""

    def __init__(self, client: Any = None):
        self._client = client

    def fetch(self, uri: ModelUri, dest: Path, limits: FetchLimits) -> Fetched:
        bucket, key = uri.location, uri.path
        where = f"s3://{bucket}/{key}"
        download = Download(dest, limits, where)
        client = self._client
        with _reasons(where, bucket, lambda: client):
            client = client or make_client()
            size = None if key.endswith("/") else _size(client, bucket, key)
            if size is not None:
                name = single_object_name(key)
                download.expect(size)
                download.write(name, _chunks(client, bucket, key))
                profile = sibling_profile(key)
                profile_size = _size(client, bucket, profile, optional=True) if profile and name != PROFILE_FILE else None
                if profile and profile_size is not None:
                    download.expect(profile_size)
                    download.write(PROFILE_FILE, _chunks(client, bucket, profile))
                return download.result(model_file=name)
            prefix = key.rstrip("/") + "/"
            objects = list(_objects_under(client, bucket, prefix))
            if not objects:
                raise FetchError(f"no object or prefix {where}")
            download.expect(sum(object_size for _, object_size in objects))
            for object_key, _ in objects:
                download.write(object_key[len(prefix):], _chunks(client, bucket, object_key))
            return download.result()


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code") or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _size(client: Any, bucket: str, key: str, optional: bool = False) -> int | None:
    """The object's size, None when there is no such object; an optional object (the sibling
    profile) the credentials may not read counts as absent, as S3 answers 403 for a missing key
    to whoever may not list the bucket."""
    from botocore.exceptions import ClientError

    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as error:
        if _code(error) in NOT_FOUND or optional and _code(error) in ACCESS_DENIED:
            return None
        if _code(error) == "403":  # a HEAD answer has no body to say why: ask again for one byte
            client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
        raise


def _objects_under(client: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under `prefix`, skipping the empty "folder" markers consoles make."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):
                yield item["Key"], int(item["Size"])


def _chunks(client: Any, bucket: str, key: str) -> Iterator[bytes]:
    """The object's bytes as they arrive; closing early (over the limit) drops the connection."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


@contextmanager
def _reasons(where: str, bucket: str, client: Any) -> Iterator[None]:
    """botocore's errors as one line naming the location and the reason, never a credential."""
    from botocore import exceptions as boto

    try:
        yield
    except FetchError:
        raise
    except boto.ClientError as error:
        code = _code(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        if code == "NoSuchBucket":
            raise FetchError(f"{where}: no such bucket {bucket!r}{_at(client())}") from None
        if code in NOT_FOUND:
            raise FetchError(f"no object or prefix {where}") from None
        if code in ACCESS_DENIED and _anonymous(client()):
            raise FetchError(f"{where}: access denied ({code}) to an anonymous request; no credentials were found: "
                             "check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the store Secret)") from None
        if code in ACCESS_DENIED:
            raise FetchError(f"{where}: access denied ({code}); check the credentials (AWS_ACCESS_KEY_ID, "
                             f"AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) and the bucket's policy") from None
        if code in WRONG_REGION:
            raise FetchError(f"{where}: the bucket is in another region ({code}); set AWS_REGION") from None
        raise FetchError(f"{where}: the store answered {code} (HTTP {status}){_at(client())}") from None
    except (boto.EndpointConnectionError, boto.ConnectTimeoutError, boto.ProxyConnectionError) as error:
        raise FetchError(f"{where}: cannot connect to the store{_at(client())} ({type(error).__name__})") from None
    except boto.SSLError:
        raise FetchError(f"{where}: TLS verification of the store failed{_at(client())}; set AWS_CA_BUNDLE "
                         "to its CA bundle") from None
    except (boto.ReadTimeoutError, boto.ConnectionClosedError, boto.ResponseStreamingError,
            boto.IncompleteReadError) as error:
        raise FetchError(f"{where}: the connection to the store broke during the download ({type(error).__name__})") from None
    except boto.PartialCredentialsError as error:
        raise FetchError(f"{where}: incomplete credentials: {error}") from None
    except (boto.NoCredentialsError, boto.CredentialRetrievalError, boto.TokenRetrievalError) as error:
        raise FetchError(f"{where}: cannot obtain credentials ({type(error).__name__})") from None
    except boto.BotoCoreError as error:
        raise FetchError(f"{where}: {type(error).__name__}: {error}") from None


def _at(client: Any) -> str:
    """' at HOST' of the endpoint (never its user info), or nothing before the client exists."""
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return f" at {urlparse(endpoint).netloc.rpartition('@')[2]}" if endpoint else ""


def _anonymous(client: Any) -> bool:
    from botocore import UNSIGNED

    return getattr(getattr(getattr(client, "meta", None), "config", None), "signature_version", None) is UNSIGNED
