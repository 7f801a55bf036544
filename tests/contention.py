"""The contention tier's tools: a slow, flaky API server and a busy CPU, reproducibly.

`FaultyApiProxy` sits between the operator and the API server (a real one over https with
`ssl_context`, the emulator, or any URL); request headers, the bearer token among them, pass on:

- every non-watch request waits a uniform random delay in [min_delay, max_delay] before it is
  forwarded (injected answers wait too: a slow server is slow to fail as well);
- mutating requests (POST, PUT, PATCH, DELETE) are answered at `conflict_rate` with a synthetic
  409 Conflict Status, and any non-watch request at `error_rate` with a synthetic 500
  InternalError Status, neither of them forwarded (one draw per request, so the two rates are
  exact and exclusive);
- watch streams (`watch=true`/`watch=1`) are relayed event by event: each event is held for a
  random time in [0, watch_delay], and up to `reorder_window` held events are released in random
  order, except that two events about the same object (same resource path, namespace and name)
  are never swapped, which is the ordering a real API server guarantees within one watch.
  Events without an object name (BOOKMARK, ERROR) are barriers: everything held before them is
  released first, so a bookmark never claims a version whose events are still held back.

All randomness comes from `random.Random(seed)`, so a run with the same seed and the same request
sequence makes the same decisions. `refused_writes` (resource plurals, e.g. `{"deployments"}`) makes
every write to those resources a 500, whatever else is on or off: a test's targeted failure.
`pause_faults()` turns delays, faults and reordering off (for a
test's setup and assertions); `resume_faults()` turns them back on.

`CpuBurners` keeps N cores busy with tight Python loops in child processes that end by themselves
after `max_seconds`, or when their parent (the test process) is gone, or on `stop()`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import ssl
import subprocess
import sys
import time
import weakref
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from modelwarden.sandbox.loopserver import LoopServer

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade",
})
# Recomputed by aiohttp on each side; the upstream is asked for identity encoding.
NOT_FORWARDED_REQUEST = HOP_BY_HOP | {"host", "content-length", "accept-encoding"}
NOT_FORWARDED_RESPONSE = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}
WATCH_TRUE = frozenset({"1", "t", "true"})


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes `Status` object as the API server sends with failures."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": reason, "code": code, "message": message}


def resource_of(path: str) -> str:
    """The resource plural a request path names (the part after `namespaces/NS/`, or after the
    group version), with a subresource: `modeldeployments/status`, `events`, `deployments`."""
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2:]
    else:
        rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    return "/".join(rest[:1] + rest[2:3]) or "/".join(parts)


class _HeldEvent:
    __slots__ = ("line", "key", "seq", "release_at")

    def __init__(self, line: bytes, key: tuple[str, str, str] | None, seq: int, release_at: float) -> None:
        self.line = line
        self.key = key
        self.seq = seq
        self.release_at = release_at


class FaultyApiProxy(LoopServer):
    """An HTTP reverse proxy to `upstream` that delays, fails and reorders like a loaded API server.

    Runs an aiohttp server on 127.0.0.1 (a free port) in a background thread with its own event
    loop; use it as a context manager or call start()/stop(). Counters (read them from any thread):
    `requests`, `watches`, `delayed`, `total_delay`, `conflicts_injected`, `errors_injected`,
    `watch_events`, `reordered`, `in_flight`, `max_in_flight`.
    """

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        min_delay: float = 0.3,
        max_delay: float = 2.0,
        conflict_rate: float = 0.05,
        error_rate: float = 0.10,
        watch_delay: float = 1.0,
        reorder_window: int = 3,
        allow: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not 0 <= min_delay <= max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        if conflict_rate < 0 or error_rate < 0 or conflict_rate + error_rate > 1:
            raise ValueError("rates must be >= 0 and sum to at most 1")
        if reorder_window < 1 or watch_delay < 0:
            raise ValueError("need reorder_window >= 1 and watch_delay >= 0")
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.seed = seed
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.conflict_rate = conflict_rate
        self.error_rate = error_rate
        self.watch_delay = watch_delay
        self.reorder_window = reorder_window
        self.allow = allow
        self.ssl_context = ssl_context  # to verify an https upstream (a real API server)
        self.rng = random.Random(seed)
        self.refused_writes: set[str] = set()
        self.reset_counters()
        self._session: aiohttp.ClientSession | None = None

    # -- switches and counters ---------------------------------------------------------------

    def pause_faults(self) -> None:
        """Plain pass-through from now on: no delays, no injected answers, watch events in order.
        Watch streams already open release what they hold at once and then relay unchanged."""
        self.allow = False

    def resume_faults(self) -> None:
        self.allow = True

    def reset_counters(self) -> None:
        self.requests = 0
        self.watches = 0
        self.delayed = 0
        self.total_delay = 0.0
        self.conflicts_injected = 0
        self.errors_injected = 0
        self.watch_events = 0
        self.reordered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.by_resource: collections.Counter[str] = collections.Counter()  # non-watch requests per resource plural

    def counters(self) -> dict[str, float]:
        names = ("requests", "watches", "delayed", "total_delay", "conflicts_injected", "errors_injected",
                 "watch_events", "reordered", "max_in_flight")
        return {name: getattr(self, name) for name in names}

    # -- lifecycle ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=False, ssl=self.ssl_context or True)
        # No total timeout: watches stream for as long as the client keeps them open.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
            self._session = session
            server = web.Server(self._handle, handler_cancellation=True)  # a dropped client cancels its handler
            runner = web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                self.port = int(runner.addresses[0][1])
                self._ready.set()
                assert self._stopping is not None
                await self._stopping.wait()
            finally:
                await runner.cleanup()

    # -- requests ----------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if request.method == "GET" and request.query.get("watch", "").lower() in WATCH_TRUE:
                self.watches += 1
                try:
                    return await self._watch(request)
                except aiohttp.ClientError as exc:  # raised before anything was sent downstream
                    return self._unreachable(exc)
            self.by_resource[resource_of(request.path)] += 1
            return await self._plain(request)
        finally:
            self.in_flight -= 1

    def _upstream_url(self, request: web.BaseRequest) -> URL:
        return URL(self.upstream + request.raw_path, encoded=True)  # path and query byte for byte

    @staticmethod
    def _forward_headers(request: web.BaseRequest) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED_REQUEST}
        headers["Accept-Encoding"] = "identity"
        return headers

    @staticmethod
    def _response_headers(upstream: aiohttp.ClientResponse) -> list[tuple[str, str]]:
        return [(k, v) for k, v in upstream.headers.items() if k.lower() not in NOT_FORWARDED_RESPONSE]

    def _injected(self, request: web.BaseRequest, code: int, reason: str, what: str) -> web.Response:
        message = f"{what} on {request.method} {request.path} (injected by the contention proxy)"
        return web.Response(status=code, text=json.dumps(status_body(code, reason, message)),
                            content_type="application/json")

    async def _plain(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        if request.method in MUTATING and resource_of(request.path) in self.refused_writes:
            self.errors_injected += 1
            return self._injected(request, 500, "InternalError", "Internal error occurred: refused by the test")
        if self.allow:
            # Both draws are taken together, so a run that sends the same requests in the same order
            # (e.g. one at a time) gets the same delays and faults for the same seed.
            delay = self.rng.uniform(self.min_delay, self.max_delay)
            draw = self.rng.random()
            if delay > 0:
                self.delayed += 1
                self.total_delay += delay
                await asyncio.sleep(delay)
            if request.method in MUTATING and draw < self.conflict_rate:
                self.conflicts_injected += 1
                return self._injected(request, 409, "Conflict", "Operation cannot be fulfilled: the object has been modified")
            if self.conflict_rate <= draw < self.conflict_rate + self.error_rate:
                self.errors_injected += 1
                return self._injected(request, 500, "InternalError", "Internal error occurred: etcdserver: request timed out")
        assert self._session is not None
        try:
            async with self._session.request(
                request.method, self._upstream_url(request), headers=self._forward_headers(request),
                data=body or None, allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                response = web.Response(status=upstream.status, reason=upstream.reason, body=payload)
                for key, value in self._response_headers(upstream):
                    response.headers.add(key, value)
                return response
        except aiohttp.ClientError as exc:
            return self._unreachable(exc)

    def _unreachable(self, exc: BaseException) -> web.Response:
        message = f"the contention proxy cannot reach {self.upstream}: {exc}"
        return web.Response(status=503, content_type="application/json",
                            text=json.dumps(status_body(503, "ServiceUnavailable", message)))

    # -- watches -----------------------------------------------------------------------------

    async def _watch(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._session is not None
        async with self._session.get(
            self._upstream_url(request), headers=self._forward_headers(request), allow_redirects=False,
        ) as upstream:
            if upstream.status >= 300:  # 4xx/5xx (e.g. 410 Gone) pass through unchanged
                payload = await upstream.read()
                response = web.Response(status=upstream.status, reason=upstream.reason, body=payload)
                for key, value in self._response_headers(upstream):
                    response.headers.add(key, value)
                return response
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in self._response_headers(upstream):
                response.headers.add(key, value)
            response.enable_chunked_encoding()
            await response.prepare(request)
            lines: asyncio.Queue[bytes | None] = asyncio.Queue()
            reader = asyncio.create_task(self._read_lines(upstream, lines))
            try:
                await _WatchRelay(self, request.path, response, random.Random(self.rng.random())).run(lines)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client hung up: drop what is held, as a real server would
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            return response

    @staticmethod
    async def _read_lines(upstream: aiohttp.ClientResponse, lines: asyncio.Queue[bytes | None]) -> None:
        """Split the upstream body into newline-delimited events (whatever the chunk boundaries)."""
        pending = b""
        try:
            async for chunk in upstream.content.iter_any():
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    if line.strip():
                        lines.put_nowait(line)
            if pending.strip():
                lines.put_nowait(pending)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # the upstream went away: end the stream as a real server's dropped watch would
        finally:
            lines.put_nowait(None)


class _WatchRelay:
    """One watch stream: hold, reorder (never within one object) and release events downstream."""

    def __init__(self, proxy: FaultyApiProxy, path: str, response: web.StreamResponse, rng: random.Random) -> None:
        self.proxy = proxy
        self.path = path
        self.response = response
        self.rng = rng
        self.held: list[_HeldEvent] = []
        self.arrived = 0

    def _key(self, line: bytes) -> tuple[str, str, str] | None:
        """(resource path, namespace, name) of an event's object; None for barriers."""
        try:
            event = json.loads(line)
            meta = event["object"]["metadata"]
            name = meta.get("name")
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if not name or event.get("type") in ("BOOKMARK", "ERROR"):
            return None
        return (self.path, meta.get("namespace") or "", name)

    async def run(self, lines: asyncio.Queue[bytes | None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.proxy.allow:
                await self._release_all()
            timeout = None
            if self.held:
                timeout = max(0.0, min(e.release_at for e in self.held) - loop.time())
            try:
                line = await asyncio.wait_for(lines.get(), timeout)
            except asyncio.TimeoutError:
                await self._release_expired(loop.time())
                continue
            if line is None:
                await self._release_all()
                return
            self.proxy.watch_events += 1
            self.arrived += 1
            key = self._key(line)
            if key is None or not self.proxy.allow:
                await self._release_all()
                await self._write(line)
                continue
            release_at = loop.time() + self.rng.uniform(0, self.proxy.watch_delay)
            # Never due before an earlier held event of the same object.
            for earlier in self.held:
                if earlier.key == key:
                    release_at = max(release_at, earlier.release_at)
            self.held.append(_HeldEvent(line, key, self.arrived, release_at))
            while len(self.held) > self.proxy.reorder_window:
                await self._release(self.rng.choice(self._eligible()))
            await self._release_expired(loop.time())

    def _eligible(self) -> list[_HeldEvent]:
        """Held events with no earlier held event of the same object (the first of each object)."""
        seen: set[tuple[str, str, str] | None] = set()
        eligible = []
        for event in self.held:  # kept in arrival order
            if event.key not in seen:
                eligible.append(event)
                seen.add(event.key)
        return eligible

    async def _release_expired(self, now: float) -> None:
        while True:
            due = [e for e in self._eligible() if e.release_at <= now]
            if not due:
                return
            await self._release(min(due, key=lambda e: (e.release_at, e.seq)))

    async def _release_all(self) -> None:
        while self.held:
            await self._release(self.rng.choice(self._eligible()))

    async def _release(self, event: _HeldEvent) -> None:
        if any(other.seq < event.seq for other in self.held):
            self.proxy.reordered += 1  # it overtakes an event that arrived before it
        self.held.remove(event)
        await self._write(event.line)

    async def _write(self, line: bytes) -> None:
        await self.response.write(line + b"\n")  # one chunk per event: the client sees it at once


_BURN = """
import os, sys, time
deadline = time.monotonic() + float(sys.argv[1])
parent = int(sys.argv[2])
x = 1
while True:
    for _ in range(100000):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
    if time.monotonic() > deadline or os.getppid() != parent:
        break
"""


class CpuBurners:
    """N child processes spinning tight Python loops to make the CPU busy.

    Each ends by itself after `max_seconds`, as soon as its parent process is gone (it checks every
    few milliseconds, so even a SIGKILLed test run leaves nothing behind), or on stop(); stop() also
    runs at interpreter exit. A context manager.
    """

    def __init__(self, n: int = 2, max_seconds: float = 900.0) -> None:
        self.n = n
        self.max_seconds = max_seconds
        self.processes: list[subprocess.Popen[bytes]] = []
        self._finalizer: weakref.finalize | None = None

    def start(self) -> "CpuBurners":
        for _ in range(self.n):
            self.processes.append(subprocess.Popen(
                [sys.executable, "-c", _BURN, str(self.max_seconds), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        self._finalizer = weakref.finalize(self, _stop_all, list(self.processes))  # also runs at exit
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def running(self) -> int:
        """How many burners are still alive."""
        return sum(1 for p in self.processes if p.poll() is None)

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for all burners to end by themselves; True if they did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.05)
        return not self.running()

    def stop(self) -> None:
        _stop_all(self.processes)

    def __enter__(self) -> "CpuBurners":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
