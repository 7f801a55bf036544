"""The contention tier's tools do what they promise: the faulty API proxy delays, fails and reorders
(but never within one object) against the real emulator, passes through cleanly when paused, and
the CPU burners start, stop and never outlive their parent."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml

from tests.contention import CpuBurners, FaultyApiProxy
from tests.kubeclient import KubeClient

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


def configmap(name: str, value: str = "0") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"v": value}}


class WatchReader:
    """A watch read in a thread; the stream ends after `idle` seconds without a line."""

    def __init__(self, url: str, params: dict[str, str], idle: float = 2.0) -> None:
        self.events: list[dict] = []
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.opened = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(url, params, idle), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the watch did not open"

    def _run(self, url: str, params: dict[str, str], idle: float) -> None:
        try:
            with requests.get(url, params=params, stream=True, timeout=(5, idle)) as response:
                self.status, self.headers = response.status_code, dict(response.headers)
                self.opened.set()
                for line in response.iter_lines():
                    if line:
                        self.events.append(json.loads(line))
        except requests.RequestException:
            pass  # the idle read timeout ends the watch
        finally:
            self.opened.set()
            self.done.set()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline and not self.done.is_set():
            time.sleep(0.02)
        assert len(self.events) >= count, f"{len(self.events)} of {count} events arrived"
        return self.events

    def finish(self, timeout: float = 20.0) -> list[dict]:
        assert self.done.wait(timeout), "the watch did not end"
        return self.events


def summary(events: list[dict]) -> list[tuple[str, str, int]]:
    return [(e["type"], e["object"]["metadata"]["name"], int(e["object"]["metadata"]["resourceVersion"])) for e in events]


def test_every_request_is_delayed_and_many_run_at_once(api_server, kube):
    kube.create("configmaps", configmap("one"))
    with FaultyApiProxy(api_server.url, seed=1, min_delay=0.2, max_delay=0.4, conflict_rate=0, error_rate=0) as proxy:
        def get(_: int) -> int:
            return requests.get(proxy.url + CONFIGMAPS + "/one", timeout=20).status_code

        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(get, range(20)))
        assert codes == [200] * 20
        assert proxy.requests == proxy.delayed == 20
        assert 20 * 0.2 <= proxy.total_delay <= 20 * 0.4
        assert proxy.max_in_flight >= 10, "requests were served one at a time"
        assert [c["metadata"]["name"] for c in KubeClient(proxy.url).list("configmaps")] == ["one"]
        assert proxy.delayed == 21


def test_injected_conflicts_and_errors_follow_the_configured_rates(api_server, kube):
    # kmock matches each request against its log of all earlier ones, so every request costs more
    # than the one before: 300 writes and 150 reads keep this test within seconds.
    names = [f"d{i:02d}" for i in range(20)]
    for name in names:
        kube.create("deployments", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {"replicas": 1000}})
    with FaultyApiProxy(api_server.url, seed=7, min_delay=0.0, max_delay=0.002) as proxy:
        url = f"{proxy.url}/apis/apps/v1/namespaces/default/deployments/"

        def patch(i: int) -> requests.Response:
            return requests.patch(url + names[i % 20], json={"spec": {"replicas": i}}, headers=MERGE, timeout=20)

        with ThreadPoolExecutor(6) as pool:
            patches = list(pool.map(patch, range(300)))
        session = requests.Session()
        gets = [session.get(url + names[i % 20], timeout=20) for i in range(150)]
        counts = proxy.counters()

    patch_codes = collections.Counter(r.status_code for r in patches)
    get_codes = collections.Counter(r.status_code for r in gets)
    assert set(patch_codes) <= {200, 409, 500} and set(get_codes) <= {200, 500}
    # 300 draws at 5 % (mean 15), 450 at 10 % (mean 45), 150 at 10 % (mean 15): the bounds are
    # about 3 standard deviations (the seed makes the counts reproducible anyway).
    assert 4 <= patch_codes[409] <= 27
    assert 26 <= patch_codes[500] + get_codes[500] <= 64
    assert 4 <= get_codes[500] <= 27
    assert counts["conflicts_injected"] == patch_codes[409]
    assert counts["errors_injected"] == patch_codes[500] + get_codes[500]
    assert counts["requests"] == counts["delayed"] == 450

    conflict = next(r for r in patches if r.status_code == 409).json()
    assert {k: conflict[k] for k in ("kind", "apiVersion", "metadata", "status", "reason", "code")} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409}
    error = next(r for r in gets if r.status_code == 500).json()
    assert (error["kind"], error["status"], error["reason"], error["code"]) == ("Status", "Failure", "InternalError", 500)
    assert error["message"]
    # Each forwarded patch changed the spec once; the injected answers never reached the server.
    generations = sum(kube.get("deployments", name)["metadata"]["generation"] - 1 for name in names)
    assert generations == patch_codes[200]


def test_watch_delivers_each_event_once_and_reorders_only_across_objects(api_server, kube):
    since = kube.session.get(kube.url + CONFIGMAPS).json()["metadata"]["resourceVersion"]
    with FaultyApiProxy(api_server.url, seed=3, watch_delay=0.5, reorder_window=4) as proxy:
        # The query kopf sends; the emulator sends no bookmarks, so only object events come.
        watch = WatchReader(proxy.url + CONFIGMAPS, {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": since})
        assert watch.status == 200
        # Writes go straight to the emulator, in a burst, so that events queue up in the proxy.
        expected = [("ADDED", "sentinel", int(kube.create("configmaps", configmap("sentinel"))["metadata"]["resourceVersion"]))]
        watch.wait_for(1)  # the watch is live: nothing below is folded into a replayed ADDED
        names = [f"cm-{i:02d}" for i in range(30)]
        for name in names:
            expected.append(("ADDED", name, int(kube.create("configmaps", configmap(name))["metadata"]["resourceVersion"])))
        for value in ("1", "2"):
            for name in names:
                patched = kube.patch("configmaps", name, {"data": {"v": value}})
                expected.append(("MODIFIED", name, int(patched["metadata"]["resourceVersion"])))
        watch.wait_for(len(expected))
        events = summary(watch.finish())  # idle for 2 s: no late duplicates

    assert sorted(events, key=lambda e: e[2]) == expected, "every event exactly once"
    assert proxy.watch_events == len(expected) == 91
    by_object = collections.defaultdict(list)
    for kind, name, version in events:
        by_object[name].append((kind, version))
    for name in names:
        assert [kind for kind, _ in by_object[name]] == ["ADDED", "MODIFIED", "MODIFIED"], name
        versions = [version for _, version in by_object[name]]
        assert versions == sorted(versions), f"{name} arrived out of order: {versions}"
    assert [e[2] for e in events] != [e[2] for e in expected], "events of different objects were never reordered"
    assert proxy.reordered >= 1


def test_pause_faults_gives_a_clean_pass_through_and_resume_brings_faults_back(api_server, kube, tmp_path):
    with FaultyApiProxy(api_server.url, seed=5, min_delay=0.05, max_delay=0.1, conflict_rate=0.5, error_rate=0.5,
                        watch_delay=0.5, reorder_window=4) as proxy:
        proxy.pause_faults()
        client = KubeClient(proxy.url)
        since = client.session.get(proxy.url + CONFIGMAPS).json()["metadata"]["resourceVersion"]
        watch = WatchReader(proxy.url + CONFIGMAPS, {"watch": "true", "resourceVersion": since}, idle=1.0)
        for i in range(10):
            client.create("configmaps", configmap(f"p{i}"))
        for i in range(10):
            assert client.patch("configmaps", f"p{i}", {"data": {"v": "1"}})["data"] == {"v": "1"}
        client.delete("configmaps", "p9")
        assert client.get("configmaps", "p9") is None
        assert client.session.get(proxy.url + CONFIGMAPS).json() == kube.session.get(kube.url + CONFIGMAPS).json()
        watch.wait_for(21)
        events = summary(watch.finish())
        assert [e[2] for e in events] == sorted(e[2] for e in events), "a paused proxy must not reorder"
        assert [e[0] for e in events].count("DELETED") == 1 and len(events) == 21
        assert (proxy.delayed, proxy.conflicts_injected, proxy.errors_injected, proxy.reordered) == (0, 0, 0, 0)
        assert proxy.requests == 1 + 1 + 10 + 10 + 1 + 1 + 1  # list, watch, creates, patches, delete, get, list

        proxy.resume_faults()
        # The two rates add up to 1: every mutating request is refused, none is forwarded.
        for method, path, body in [
            ("POST", CONFIGMAPS, configmap("new")),
            ("PUT", CONFIGMAPS + "/p0", configmap("p0", "9")),
            ("PATCH", CONFIGMAPS + "/p0", {"data": {"v": "9"}}),
            ("DELETE", CONFIGMAPS + "/p0", None),
        ] * 2:
            response = requests.request(method, proxy.url + path, json=body, headers=MERGE if method == "PATCH" else {}, timeout=10)
            assert response.status_code in (409, 500) and response.json()["kind"] == "Status", (method, response.text)
        assert proxy.conflicts_injected + proxy.errors_injected == 8 and proxy.delayed == 8
        assert kube.get("configmaps", "p0")["data"] == {"v": "1"} and kube.get("configmaps", "new") is None

        kubeconfig = yaml.safe_load(proxy.write_kubeconfig(tmp_path / "kubeconfig").read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == proxy.url
        reference = api_server.kubeconfig()
        reference["clusters"][0]["cluster"]["server"] = proxy.url
        assert kubeconfig == reference


class _StubApi(BaseHTTPRequestHandler):
    """An upstream that records what reaches it, fails an expired watch with 410 and streams a
    chunked watch whose second event waits until the test has seen the first one."""

    protocol_version = "HTTP/1.1"
    seen: list[dict] = []
    first_seen = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                          "body": self.rfile.read(length) if length else b""})

    def _send(self, code: int, body: dict, **headers: str) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_PATCH(self) -> None:
        self._record()
        self._send(200, {"kind": "ConfigMap"}, **{"X-Stub": "patched"})

    def do_GET(self) -> None:
        self._record()
        if "resourceVersion=expired" in self.path:
            self._send(410, {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}, **{"X-Stub": "gone"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        event = {"type": "ADDED", "object": {"metadata": {"name": "a", "namespace": "default", "resourceVersion": "1"}}}
        line = json.dumps(event).encode()
        chunk(line[:10])  # an event split over chunks is reassembled
        chunk(line[10:] + b"\n")
        self.first_seen.wait(10)
        chunk(json.dumps({**event, "type": "MODIFIED"}).encode() + b"\n")
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def stub_api():
    _StubApi.seen = []
    _StubApi.first_seen = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    _StubApi.first_seen.set()
    server.shutdown()
    server.server_close()


def test_requests_and_watch_streams_pass_through_unchanged(stub_api):
    with FaultyApiProxy(stub_api, watch_delay=0.2) as proxy:
        proxy.pause_faults()
        body = b'{"metadata":{"labels":{"a":"b"}}}'
        query = "?fieldManager=kopf&labelSelector=app%3Dx%2Cteam%21%3Dy&force=true"
        response = requests.patch(f"{proxy.url}/api/v1/namespaces/default/configmaps/c{query}", data=body, timeout=10, headers={
            "Content-Type": "application/merge-patch+json", "Accept": "application/json", "Authorization": "Bearer token",
            "Connection": "keep-alive"})
        assert response.status_code == 200 and response.headers["X-Stub"] == "patched"
        seen = _StubApi.seen[-1]
        assert (seen["method"], seen["path"], seen["body"]) == ("PATCH", f"/api/v1/namespaces/default/configmaps/c{query}", body)
        assert {k: seen["headers"].get(k) for k in ("Content-Type", "Accept", "Authorization")} == {
            "Content-Type": "application/merge-patch+json", "Accept": "application/json", "Authorization": "Bearer token"}

        proxy.resume_faults()
        gone = requests.get(f"{proxy.url}/api/v1/configmaps", params={"watch": "1", "resourceVersion": "expired"}, timeout=10)
        assert gone.status_code == 410 and gone.headers["X-Stub"] == "gone"
        assert gone.json() == {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}

        # The first event must arrive while the upstream still holds the stream open.
        watch = WatchReader(f"{proxy.url}/api/v1/configmaps", {"watch": "true"})
        assert watch.status == 200 and watch.headers["Content-Type"] == "application/json"
        watch.wait_for(1, timeout=10)
        _StubApi.first_seen.set()
        events = watch.finish()
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    assert proxy.watches == 2 and proxy.watch_events == 2 and proxy.errors_injected == 0


def _cpu_ticks(pid: int) -> int:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_cpu_burners_burn_stop_and_never_outlive_their_parent():
    with CpuBurners(n=2, max_seconds=60) as burners:
        assert burners.running() == 2
        before = [_cpu_ticks(pid) for pid in burners.pids]
        time.sleep(0.5)
        assert all(_cpu_ticks(pid) > ticks for pid, ticks in zip(burners.pids, before)), "the burners are not burning"
    assert burners.running() == 0

    short = CpuBurners(n=1, max_seconds=0.5).start()
    try:
        assert short.wait(120), "a burner outlived its max_seconds"  # a bound for a busy machine, not a duration
    finally:
        short.stop()

    # A parent killed outright (no cleanup) still leaves no burner behind.
    parent = subprocess.Popen(
        [sys.executable, "-c", "from tests.contention import CpuBurners; import time; "
         "b = CpuBurners(n=1, max_seconds=60).start(); print(b.pids[0], flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        orphan = int(parent.stdout.readline())
        assert not _gone(orphan)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(orphan), "a burner outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()
