"""Local files: the `file://` store (a copy), and the writing side every store shares.

Every store streams bytes into a :class:`Download`, which keeps the byte budget over the whole
artifact (stopping at the first byte over it), refuses object names that would leave the
destination, hashes each file as it is written, and names a single model object the way
`modelwarden serve` looks for it (model.joblib or model.skops).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from modelwarden.contract.modeluri import ModelUri
from modelwarden.storage.base import FetchError, Fetched, FetchLimits

# A fetched directory's model file (the one --sha256 checks), in the order they are looked for; a
# single fetched model object is saved under the first two, the names `modelwarden serve --model
# DIR` looks for (serving/model.py: MODEL_FILE).
MODEL_FILE_NAMES = ("model.joblib", "model.skops", "model.pkl")
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
SKOPS_SUFFIX = ".skops"
# "The profile travels with the model": fetched with a single object when it sits next to it.
PROFILE_FILE = "profile.json"
CHUNK_BYTES = 1024 * 1024


def single_object_name(object_name: str) -> str:
    """The file name a single fetched object gets: a pickle or skops model is renamed so the server
    finds it; anything else keeps its own name."""
    name = PurePosixPath(object_name).name
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return MODEL_FILE_NAMES[0]
    if suffix == SKOPS_SUFFIX:
        return MODEL_FILE_NAMES[1]
    return name


def sibling_profile(object_name: str) -> str | None:
    """The profile.json next to a single object (None when the object is that profile)."""
    path = PurePosixPath(object_name)
    if path.name == PROFILE_FILE:
        return None
    return str(path.with_name(PROFILE_FILE))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Sink:
    """One file being written: every write counts against the artifact's budget and is hashed."""

    def __init__(self, download: Download, handle: BinaryIO):
        self._download = download
        self._handle = handle
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._download.count(len(data))
        self._digest.update(data)
        return self._handle.write(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class Download:
    """An artifact being written into `dest` (an empty directory): its files, its bytes so far
    against FetchLimits.max_bytes, and each file's sha256. `location` names it in errors."""

    def __init__(self, dest: Path, limits: FetchLimits, location: str):
        self.dest = dest
        self.limits = limits
        self.location = location
        self.files: list[str] = []
        self.total_bytes = 0
        self.digests: dict[str, str] = {}

    def too_large(self) -> FetchError:
        return FetchError(f"{self.location}: artifact is larger than the limit of {self.limits.max_bytes} bytes")

    def expect(self, size: int | None) -> None:
        """Refuse before downloading anything when the announced size already exceeds the budget
        (announced sizes are not trusted otherwise: every written byte is counted too)."""
        if size is not None and self.total_bytes + size > self.limits.max_bytes:
            raise self.too_large()

    def count(self, size: int) -> None:
        self.total_bytes += size
        if self.total_bytes > self.limits.max_bytes:
            raise self.too_large()

    def target(self, relative: str) -> Path:
        """`dest/relative`, refusing a name that is absolute, empty or climbs out with '..'."""
        parts = relative.split("/")  # not PurePosixPath, which would quietly drop "." and "" parts
        if any(part in ("", ".", "..") for part in parts):
            raise FetchError(f"{self.location}: refusing the object name {relative!r}, which would leave the destination")
        return self.dest.joinpath(*parts)

    @contextmanager
    def open(self, relative: str) -> Iterator[Sink]:
        """Write one file through a Sink; a file left half-written by an error is removed."""
        path = self.target(relative)
        if relative in self.digests:
            raise FetchError(f"{self.location}: two objects would both be saved as {relative!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("xb") as handle:
                sink = Sink(self, handle)
                yield sink
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self.files.append(relative)
        self.digests[relative] = sink.hexdigest()

    def write(self, relative: str, chunks: Iterable[bytes]) -> None:
        """Stream `chunks` into `dest/relative`, stopping at the first byte over the budget."""
        with self.open(relative) as sink:
            for chunk in chunks:
                sink.write(chunk)

    def result(self, model_file: str | None = None) -> Fetched:
        """What was fetched; the model file is `model_file` (a single object) or the first of
        MODEL_FILE_NAMES the directory holds at its top."""
        if model_file is None:
            model_file = next((name for name in MODEL_FILE_NAMES if name in self.digests), None)
        digest = self.digests.get(model_file) if model_file else None
        return Fetched(tuple(self.files), self.total_bytes, model_file, digest)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        yield from iter(lambda: source.read(CHUNK_BYTES), b"")


class LocalStore:
    """`file:///PATH` or `/PATH`: copies a file (named like a single object, with its sibling
    profile.json) or a directory tree. Mostly for tests and for images that bake models in."""

    def fetch(self, uri: ModelUri, dest: Path, limits: FetchLimits) -> Fetched:
        source = Path(uri.path)
        download = Download(dest, limits, uri.printable)
        try:
            if source.is_file():
                name = single_object_name(source.name)
                download.expect(source.stat().st_size)
                download.write(name, _read_chunks(source))
                profile = sibling_profile(source.name)
                if profile and name != PROFILE_FILE and (source.parent / profile).is_file():
                    download.write(PROFILE_FILE, _read_chunks(source.parent / profile))
                return download.result(model_file=name)
            if source.is_dir():
                files = sorted(p for p in source.rglob("*") if p.is_file())
                if not files:
                    raise FetchError(f"{uri.printable}: the directory is empty")
                download.expect(sum(p.stat().st_size for p in files))
                for path in files:
                    download.write(path.relative_to(source).as_posix(), _read_chunks(path))
                return download.result()
        except PermissionError:
            raise FetchError(f"{uri.printable}: permission denied reading {source}") from None
        raise FetchError(f"no file or directory {source}")

