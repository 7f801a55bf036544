"""`https://HOST/PATH`: one file, streamed with requests (a presigned URL, a release asset…).

The URL's query string may hold a signature, so it is never printed: errors name HOST/PATH only,
and requests' own messages (which quote the URL) are never passed on. A private CA is trusted
through REQUESTS_CA_BUNDLE or SSL_CERT_FILE. Redirects are followed, but never to plain http.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from modelwarden.contract.modeluri import ModelUri
from modelwarden.storage.base import FetchError, Fetched, FetchLimits
from modelwarden.storage.local import CHUNK_BYTES, MODEL_FILE_NAMES, Download, single_object_name

CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60  # between two bytes, not for the whole download
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
STATUS_REASONS = {
    401: "access denied; the URL needs credentials or its signature is wrong",
    403: "access denied; the URL's signature may have expired or the object is private",
    404: "not found",
    410: "gone",
}


def _verify() -> str | bool:
    """The CA bundle to trust: requests reads REQUESTS_CA_BUNDLE itself, but not SSL_CERT_FILE."""
    return next((os.environ[name] for name in CA_VARIABLES if os.environ.get(name)), True)


class HttpsStore:
    """The URL's one file, saved as model.joblib/model.skops when it is a model (by its suffix, or
    model.joblib when the URL path names no file) and under its own name otherwise."""

    def fetch(self, uri: ModelUri, dest: Path, limits: FetchLimits) -> Fetched:
        import requests

        where = uri.printable
        object_name = unquote(PurePosixPath(urlparse(uri.uri).path).name)
        name = single_object_name(object_name) if object_name else MODEL_FILE_NAMES[0]
        download = Download(dest, limits, where)
        try:
            with requests.get(uri.uri, stream=True, verify=_verify(), headers={"Accept-Encoding": "identity"},
                              timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)) as response:
                if any(urlparse(hop.url).scheme != "https" for hop in (*response.history, response)):
                    raise FetchError(f"{where}: refusing a redirect to plain http")
                if response.status_code != 200:
                    reason = STATUS_REASONS.get(response.status_code, response.reason or "unexpected status")
                    raise FetchError(f"{where}: HTTP {response.status_code} {reason}")
                download.expect(_announced_size(response))
                download.write(name, _chunks(response))
        except FetchError:
            raise
        except requests.exceptions.SSLError:
            raise FetchError(f"{where}: TLS verification failed; set REQUESTS_CA_BUNDLE or SSL_CERT_FILE to the "
                             "server's CA bundle") from None
        except requests.exceptions.ConnectTimeout:
            raise FetchError(f"{where}: timed out connecting after {CONNECT_TIMEOUT_SECONDS}s") from None
        except requests.exceptions.ReadTimeout:
            raise FetchError(f"{where}: the server sent nothing for {READ_TIMEOUT_SECONDS}s") from None
        except requests.exceptions.ConnectionError:
            raise FetchError(f"{where}: cannot connect (connection refused or name not resolved)") from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
            raise FetchError(f"{where}: the connection broke during the download ({type(error).__name__})") from None
        except requests.exceptions.RequestException as error:
            raise FetchError(f"{where}: the request failed ({type(error).__name__})") from None
        return download.result(model_file=name)


def _announced_size(response: Any) -> int | None:
    """Content-Length, trusted only to refuse early: the bytes are counted as they arrive."""
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _chunks(response: Any) -> Iterator[bytes]:
    """The file as it arrives (decoded if a server compresses anyway: the budget counts what is written)."""
    yield from response.iter_content(CHUNK_BYTES)
