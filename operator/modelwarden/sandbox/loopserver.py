"""A loopback API endpoint whose asyncio loop runs in a background thread (the emulator, test proxies).

start() returns once the server listens; stop() ends the loop and joins the thread; kubeconfig()
points a client (kopf, kubectl) at it with a dummy token.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import yaml


class LoopServer:
    """Subclasses implement `_serve()`: listen, set `self.port`, call `self._ready.set()`, then
    `await self._stopping.wait()`."""

    thread_name = "loop-server"

    def __init__(self) -> None:
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.thread_name} is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Any:
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self.thread_name} did not start")
        if self._error:
            raise RuntimeError(f"{self.thread_name} failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop and self._stopping and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve_until_stopped())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve_until_stopped(self) -> None:
        self._stopping = asyncio.Event()
        await self._serve()

    async def _serve(self) -> None:
        raise NotImplementedError

    def kubeconfig(self, token: str = "emulator") -> dict[str, Any]:
        """A kubeconfig for this server over plain HTTP; ``token`` is sent as the bearer token
        (the emulator ignores it; a proxy to a real API server forwards it)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": token}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"}}],
            "current-context": "emulator",
        }

    def write_kubeconfig(self, path: Path | str, token: str = "emulator") -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig(token)))
        return path

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
