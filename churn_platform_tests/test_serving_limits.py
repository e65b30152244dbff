"""Issue 14.7 limits: request bodies over the byte limit refused unread, short quotes of bad
values, a rotating inference log with bounded files, env.sh's MLFLOW_TRACKING_URI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from churn_platform.core.spec import default_spec
from churn_platform.serving.inference_log import InferenceLog, read_inference_log, rotated_path
from churn_platform.testing import RegisteredModels, start_model_server, to_records

ROOT = Path(__file__).resolve().parents[1]


def send_huge_body(url: str, size: int) -> tuple[int, bytes]:
    """POST a body of ``size`` bytes declared by Content-Length; return (status, answer).

    Sent by hand so the client stops writing when the server answers early (httpx would
    push all 50 MB first).
    """
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        ).encode()
        sock.sendall(head + b"[" * 65536)  # a first piece; the rest never needs to go
        answer = b""
        while True:
            head_end = answer.find(b"\r\n\r\n")
            if head_end >= 0:
                length = next(
                    int(line.split(b":")[1])
                    for line in answer[:head_end].lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                if len(answer) >= head_end + 4 + length:
                    break
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return status, answer


@pytest.mark.integration
def test_a_50mb_body_is_refused_unread_while_one_row_requests_keep_answering(
    registered_models: RegisteredModels, tmp_path: Path
) -> None:
    record = to_records(registered_models.rows.head(1))
    with start_model_server(registered_models, "1", tmp_path) as server:
        statuses: Counter[int] = Counter()
        stop = threading.Event()

        def small_requests() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    r = client.post("/predict", json={"records": record})
                    statuses[r.status_code] += 1

        def answered() -> int:
            return sum(statuses.values())

        def wait_for(n: int) -> None:
            while answered() < n and worker.is_alive():
                stop.wait(0.01)

        worker = threading.Thread(target=small_requests)
        worker.start()
        try:
            wait_for(5)
            for _ in range(5):
                before = answered()
                status, answer = send_huge_body(server.url, 50_000_000)
                assert status == 413, answer[:300]
                assert b"CHURN_MAX_BODY_BYTES" in answer
                wait_for(before + 3)  # the small client keeps getting answers
        finally:
            stop.set()
            worker.join()
        # the 1-row client was never refused or failed while the huge bodies came in
        assert set(statuses) == {200}, statuses
        assert statuses[200] >= 20
        # the server read none of them: its memory did not grow by 50 MB per body
        rss_kb = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            )
        )
        assert rss_kb < 600_000, f"peak RSS {rss_kb} kB"


@pytest.mark.integration
def test_a_huge_bad_value_is_quoted_as_a_short_prefix(
    registered_models: RegisteredModels, tmp_path: Path
) -> None:
    records = to_records(registered_models.rows.head(1))
    records[0]["region"] = "x" * 5_000_000
    with start_model_server(registered_models, "1", tmp_path) as server:
        r = httpx.post(server.url + "/predict", json={"records": records}, timeout=60)
        assert r.status_code == 422
        assert "records[0].region" in r.json()["error"]
        assert len(r.content) < 500, len(r.content)
        r = httpx.post(
            server.url + "/predict",
            content=b'{"records": [' + b"9" * 1_000_000,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert r.status_code == 400 and len(r.content) < 500, r.content[:300]


def test_inference_log_rotates_by_size_and_keeps_a_bounded_number_of_files(
    tmp_path: Path,
) -> None:
    path = tmp_path / "1.jsonl"
    log = InferenceLog(path, "1", flush_records=10, flush_seconds=3600.0, max_bytes=4096, backups=2)
    record = {"tenure_months": 3, "region": "north"}
    for _ in range(200):
        log.append([record] * 10, [0.5] * 10)
    log.flush()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files in (["1.jsonl", "1.jsonl.1", "1.jsonl.2"], ["1.jsonl.1", "1.jsonl.2"]), files
    for n in (1, 2):
        size = rotated_path(path, n).stat().st_size
        assert 4096 <= size < 4096 + 2000, size  # rotated once past the limit
    # the drift sensor still sees the newest rows across a rotation
    rows = read_inference_log(path, default_spec(), max_rows=40)
    assert len(rows) == 40 and set(rows["region"]) == {"north"}


def test_env_sh_exports_the_local_mlflow_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME")}
    env["CHURN_HOME"] = str(home)
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'deploy/local/env.sh'} && echo $MLFLOW_TRACKING_URI"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == f"sqlite:///{home}/mlflow/mlflow.db"
    assert (home / "mlflow").is_dir()
    # the platform's own default is the same store
    code = "from churn_platform.settings import default_mlflow_uri; print(default_mlflow_uri())"
    env.pop("MLFLOW_TRACKING_URI", None)
    ours = subprocess.run(
        ["python", "-c", code],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert ours == out
    # an explicit value wins
    env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:5000"
    kept = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'deploy/local/env.sh'} && echo $MLFLOW_TRACKING_URI"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert kept == "http://127.0.0.1:5000"
    assert json.dumps(kept)
