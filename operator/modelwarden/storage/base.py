"""The seam between `modelwarden fetch-model` and where artifacts live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelwarden.contract.modeluri import ModelUri

DEFAULT_MAX_BYTES = 10 * 1024**3


class FetchError(RuntimeError):
    """A fetch that failed; the message is one line naming the URI's location and the reason
    (never a credential), fit for a termination message and a ModelDeployment condition."""


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = DEFAULT_MAX_BYTES  # the whole artifact, all files together
    sha256: str | None = None  # of the model file (a single-object artifact, or the model file of a directory)


@dataclass(frozen=True)
class Fetched:
    files: tuple[str, ...]  # paths relative to the destination
    total_bytes: int
    model_file: str | None  # the file the server loads, when one was recognised
    sha256: str | None  # of model_file


class ArtifactStore(Protocol):
    """Downloads one artifact (a single object or a directory of them) into `dest`."""

    def fetch(self, uri: ModelUri, dest: Path, limits: FetchLimits) -> Fetched: ...
