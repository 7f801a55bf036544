"""`modelwarden fetch-model URI DEST`: the storage initializer of the model pods.

Downloads the artifact a model URI names (s3://, gs://, https://, models:/, runs:/, or a local
path) into DEST, all or nothing, within a byte limit and, when given, checking the model file's
sha256. Success prints one summary line. A failure is one line on stderr, also written to the
container's termination-message file, so the operator can show the reason from the Pod status
without reading logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from pathlib import Path

from modelwarden.contract import modeluri
from modelwarden.storage.base import DEFAULT_MAX_BYTES, FetchError, FetchLimits
from modelwarden.storage.factory import fetch

SHA256_VARIABLE = "MODEL_SHA256"
MAX_BYTES_VARIABLE = "MODEL_MAX_BYTES"
TERMINATION_LOG_VARIABLE = "MODELWARDEN_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_MESSAGE_CHARS = 1000  # Kubernetes keeps 4096 bytes of a termination message; one line needs far less
PREFIX = "fetch-model: "


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help="s3://BUCKET/KEY, gs://BUCKET/KEY, https://HOST/PATH, models:/NAME/VERSION, "
                        "runs:/RUN_ID/PATH, or a local path")
    parser.add_argument("dest", metavar="DEST", type=Path, help="directory to fill (created if missing)")
    parser.add_argument("--sha256", default=os.environ.get(SHA256_VARIABLE) or None,
                        help=f"expected sha256 of the model file (default: ${SHA256_VARIABLE})")
    parser.add_argument("--max-bytes", default=os.environ.get(MAX_BYTES_VARIABLE) or str(DEFAULT_MAX_BYTES),
                        help=f"refuse an artifact larger than this, all files together (default: ${MAX_BYTES_VARIABLE} "
                             f"or {DEFAULT_MAX_BYTES})")


def run(args: argparse.Namespace) -> int:
    # One line on stderr is the contract: no library warnings or log records around it.
    warnings.simplefilter("ignore")
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        limits = _limits(args.sha256, args.max_bytes)
        uri = modeluri.parse(args.uri)
        fetched = fetch(uri, args.dest, limits)
    except modeluri.InvalidModelUri as error:
        return _fail(str(error).replace(args.uri, modeluri.printable(args.uri)))
    except FetchError as error:
        return _fail(str(error))
    except ImportError as error:  # a store whose library is not installed in this image
        return _fail(f"{modeluri.printable(args.uri)}: cannot load the store for this scheme ({error.name or error})")
    except Exception as error:  # noqa: BLE001 - a bug still ends as one line in the Pod status
        message = str(error).replace(args.uri, modeluri.printable(args.uri))
        return _fail(f"{modeluri.printable(args.uri)}: unexpected {type(error).__name__}: {message}")
    model = f"model file {fetched.model_file} sha256 {fetched.sha256}" if fetched.model_file else "no model file recognised"
    print(f"fetched {len(fetched.files)} files, {fetched.total_bytes} bytes, {model}")
    return 0


def _limits(sha256: str | None, max_bytes: str) -> FetchLimits:
    if sha256 is not None and not SHA256_HEX.match(sha256):
        raise FetchError(f"--sha256 must be 64 hexadecimal digits, not {sha256!r}")
    try:
        limit = int(max_bytes)
    except ValueError:
        raise FetchError(f"--max-bytes must be a whole number of bytes, not {max_bytes!r}") from None
    if limit <= 0:
        raise FetchError(f"--max-bytes must be positive, not {limit}")
    return FetchLimits(max_bytes=limit, sha256=sha256.lower() if sha256 else None)


def _fail(message: str) -> int:
    line = PREFIX + " ".join(message.split())[:MAX_MESSAGE_CHARS]
    print(line, file=sys.stderr)
    _write_termination_message(line)
    return 1


def _write_termination_message(line: str) -> None:
    """Best effort. The default file is written only when it exists (the kubelet provides it in a
    container; elsewhere /dev is no place to create files); one named by the environment is
    created when its directory exists and is writable."""
    named = os.environ.get(TERMINATION_LOG_VARIABLE)
    path = Path(named or DEFAULT_TERMINATION_LOG)
    creatable = bool(named) and path.parent.is_dir() and os.access(path.parent, os.W_OK)
    if not (path.is_file() or creatable):
        return
    try:
        path.write_text(line)
    except OSError:
        pass
