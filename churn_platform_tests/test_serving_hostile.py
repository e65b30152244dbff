"""Hostile and broken clients against a real model server and a real router in front of it:
nested JSON, generated bodies, half-sent bodies, clients that hang up, and a backend that
closes its idle keep-alive connections (issue #27, points 1 and 6)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from churn_platform.serving.model_server.app import create_app
from churn_platform.serving.router import forwarding
from churn_platform.serving.router.app import create_router_app
from churn_platform.serving.router.table import Backend
from churn_platform.testing import RegisteredModels, start_model_server, start_router, to_records

BODY_TIMEOUT = 2.0
LOG_MAX_BYTES = 4096
LOG_BACKUPS = 2
ENV = {
    "CHURN_BODY_READ_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "CHURN_SERVER_LOG_MAX_BYTES": str(LOG_MAX_BYTES),
    "CHURN_SERVER_LOG_BACKUPS": str(LOG_BACKUPS),
}
JSON = {"content-type": "application/json"}
NESTED = b"[" * 100_000


@pytest.fixture(scope="module")
def stack(
    registered_models: RegisteredModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A model server and a router sending it all traffic; the router logs at info level,
    so each client disconnect is a line and its log rotates."""
    work = tmp_path_factory.mktemp("hostile")
    with start_model_server(registered_models, "1", work, ENV) as server:
        state = work / "router.json"
        state.write_text(json.dumps({"backends": {"1": {"url": server.url, "weight": 100}}}))
        with start_router(state, ENV, args=("--log-level", "info")) as router:
            yield {
                "server": server.url,
                "router": router,
                "server_log": str(server.log),
                "router_log": str(state.with_suffix(".log")),
            }


@pytest.fixture(scope="module")
def good_body(registered_models: RegisteredModels) -> bytes:
    return json.dumps({"records": to_records(registered_models.rows.head(2))}).encode()


def counted(url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on ``url``/metrics whose labels include ``labels``."""
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@contextlib.contextmanager
def good_client(url: str, body: bytes) -> Iterator[Callable[[int], Counter[int]]]:
    """A client posting ``body`` in a loop while the block runs; yields ``wait_for(n)``,
    which waits (bounded) until ``n`` more answers came and returns the statuses so far."""
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                statuses[client.post("/predict", content=body, headers=JSON).status_code] += 1

    def wait_for(n: int) -> Counter[int]:
        goal, deadline = sum(statuses.values()) + n, time.monotonic() + 60
        while sum(statuses.values()) < goal and worker.is_alive() and time.monotonic() < deadline:
            stop.wait(0.01)
        return statuses

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        yield wait_for
    finally:
        stop.set()
        worker.join()


def connection(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def exchange(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """One request on a kept-alive connection; a dropped connection raises."""
    conn.request("POST", path, body, headers)
    answer = conn.getresponse()
    data = answer.read()
    assert answer.getheader("connection") != "close", (path, answer.status, data[:200])
    return answer.status, data


def assert_no_traceback(*logs: str) -> None:
    for log in logs:
        text = Path(log).read_text(errors="replace")
        assert "Traceback" not in text and "Exception in ASGI" not in text, text[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize("target", ["server", "router"])
def test_nested_json_is_a_400_the_connection_stays_usable_and_others_see_only_200(
    stack: dict[str, str], good_body: bytes, target: str
) -> None:
    url = stack[target]
    before_500 = counted(stack["server"], "http_requests_total", status="500")
    before_400 = counted(stack["server"], "http_requests_total", status="400")
    conn = connection(url)
    with good_client(url, good_body) as wait_for:
        wait_for(3)
        for path in ("/predict", "/invocations") * 3:
            status, data = exchange(conn, path, NESTED, JSON)
            assert status == 400, data[:300]
            assert b"nested" in data
            # the same connection answers the next request
            assert exchange(conn, "/predict", good_body, JSON)[0] == 200
            wait_for(2)
        statuses = wait_for(1)
    conn.close()
    assert set(statuses) == {200}, statuses
    assert counted(stack["server"], "http_requests_total", status="500") == before_500
    assert counted(stack["server"], "http_requests_total", status="400") == before_400 + 6
    if target == "router":
        assert counted(url, "router_requests_total", status="502") == 0
    assert_no_traceback(stack["server_log"], stack["router_log"])


def test_an_unexpected_server_error_is_an_answered_and_counted_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app("models:/churn_model/1", "1")  # no lifespan: nothing is loaded

    def broken() -> str | None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.service, "not_ready", broken)
    client = TestClient(app)
    for path in ("/predict", "/invocations"):
        answer = client.post(path, content=b"{}", headers=JSON)
        assert answer.status_code == 500
        assert "RuntimeError" in answer.text
    text = client.get("/metrics").text
    assert 'http_requests_total{model_version="1",path="/predict",status="500"} 1.0' in text
    assert 'http_requests_total{model_version="1",path="/invocations",status="500"} 1.0' in text


def test_an_unexpected_router_error_is_an_answered_and_counted_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_router_app(backends={"1": Backend("1", "http://127.0.0.1:9", 100)})

    async def broken(*args: object) -> tuple[str, object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(forwarding, "forward", broken)
    with TestClient(app) as client:
        answer = client.post("/invocations", content=b"{}", headers=JSON)
        assert answer.status_code == 500
        assert answer.json()["error_code"] == "INTERNAL_ERROR"
        assert (
            'router_requests_total{backend="none",status="500"} 1.0' in client.get("/metrics").text
        )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=25,
)
PAYLOADS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"records": st.lists(JSON_VALUES, max_size=3)}),
    st.fixed_dictionaries(
        {"dataframe_split": st.fixed_dictionaries({"columns": JSON_VALUES, "data": JSON_VALUES})}
    ),
    st.fixed_dictionaries({"dataframe_records": JSON_VALUES}),
    st.fixed_dictionaries({"instances": JSON_VALUES}),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["json", "nested", "bytes", "wrapped"]))
    if kind == "nested":
        depth = draw(st.integers(1, 200_000))
        return draw(st.sampled_from([b"[", b"{", b'{"a":', b"[{", b'{"records":['])) * depth
    if kind == "bytes":
        return draw(st.binary(max_size=3000))
    text = json.dumps(draw(PAYLOADS))
    if kind == "wrapped":
        depth = draw(st.integers(1, 100))
        text = "[" * depth + text + "]" * depth
    return text.encode(draw(st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-16-le"])))


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; format=pandas-split",
        "application/json; charset=latin-1",
        "text/csv",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
    ]
)


@pytest.mark.integration
def test_generated_bodies_never_get_a_5xx_nor_a_dropped_connection(
    stack: dict[str, str], good_body: bytes
) -> None:
    conns = {target: connection(stack[target]) for target in ("server", "router")}
    stop_at = time.monotonic() + 90  # a wall-clock cap on top of max_examples
    seen: Counter[int] = Counter()

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        body=bodies(),
        content_type=CONTENT_TYPES,
        path=st.sampled_from(["/predict", "/invocations"]),
        target=st.sampled_from(["server", "router"]),
    )
    def one(body: bytes, content_type: str, path: str, target: str) -> None:
        if time.monotonic() > stop_at:
            return
        headers = {"content-type": content_type} if content_type else {}
        status, data = exchange(conns[target], path, body, headers)
        seen[status] += 1
        assert status < 500, (target, path, content_type, body[:200], data[:300])

    with good_client(stack["router"], good_body) as wait_for:
        one()
        statuses = wait_for(1)
    assert set(statuses) == {200}, statuses
    assert seen and max(seen) < 500, seen
    assert_no_traceback(stack["server_log"], stack["router_log"])


def half_sent(url: str, count: int) -> list[socket.socket]:
    """``count`` connections that each send the headers and the start of a body, then stall."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(head + b'{"records": [')
        socks.append(sock)
    return socks


def closed_after(sock: socket.socket, deadline: float) -> bytes:
    """What the server sent before closing ``sock``; raises if it is open at ``deadline``."""
    answer = b""
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)  # socket.timeout past the deadline: never closed
        if not chunk:
            return answer
        answer += chunk


@pytest.mark.integration
@pytest.mark.parametrize("target", ["server", "router"])
def test_half_sent_bodies_are_closed_after_the_read_timeout_while_good_requests_go_on(
    stack: dict[str, str], good_body: bytes, target: str
) -> None:
    url = stack[target]
    with good_client(url, good_body) as wait_for:
        socks = half_sent(url, 300)
        try:
            statuses = wait_for(20)  # answered while 300 bodies hang
            deadline = time.monotonic() + 60
            answers = [closed_after(sock, deadline) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        statuses = wait_for(5)
    assert set(statuses) == {200} and statuses[200] >= 25, statuses
    for answer in answers:
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) >= len(answers) // 2
    assert b"CHURN_BODY_READ_TIMEOUT_SECONDS" in next(a for a in answers if a)
    assert_no_traceback(stack["server_log"], stack["router_log"])


@pytest.mark.integration
def test_clients_hanging_up_mid_body_leave_one_short_line_each_and_a_bounded_log(
    stack: dict[str, str],
) -> None:
    url = stack["router"]
    before = counted(url, "router_requests_total", status="499")
    for sock in half_sent(url, 200):
        sock.close()
    deadline = time.monotonic() + 60
    while counted(url, "router_requests_total", status="499") < before + 200:
        assert time.monotonic() < deadline, "the router did not notice the disconnects"
        time.sleep(0.05)
    log = Path(stack["router_log"])
    files = sorted(log.parent.glob(log.name + "*"))
    # 200 lines of ~120 bytes: rotated, and no more than the bound kept
    assert log.with_name(log.name + ".1") in files, files
    assert len(files) <= 1 + LOG_BACKUPS, files
    for file in files:
        assert file.stat().st_size <= LOG_MAX_BYTES + 512, (file, file.stat().st_size)
    assert "mid-body" in "".join(f.read_text() for f in files)
    assert_no_traceback(*(str(f) for f in files), stack["server_log"])


class ClosingBackend:
    """A model server stand-in that answers the first request on each connection with
    keep-alive, then closes the connection instead of answering the next one: what a
    backend that closes idle keep-alive connections looks like to a pooled client."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.answered = 0
        self.closed_unanswered = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            data = b""
            for requests in (0, 1):
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                if requests:
                    self.closed_unanswered += 1
                    return
                head, _, data = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                body = b'{"model_version":"1","probabilities":[0.5]}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                self.answered += 1

    def close(self) -> None:
        self.listener.close()


@pytest.mark.integration
def test_the_router_retries_once_a_request_whose_pooled_connection_was_dead(
    tmp_path: Path,
) -> None:
    backend = ClosingBackend()
    state = tmp_path / "router.json"
    state.write_text(json.dumps({"backends": {"1": {"url": backend.url, "weight": 100}}}))
    try:
        with start_router(state) as url, httpx.Client(base_url=url, timeout=30) as client:
            statuses = Counter(
                client.post("/predict", content=b"{}", headers=JSON).status_code for _ in range(20)
            )
    finally:
        backend.close()
    assert statuses == {200: 20}, statuses
    assert backend.answered == 20
    assert backend.closed_unanswered >= 1  # the dead pooled connections were really met
