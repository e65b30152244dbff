"""The model server beside MLServer (V2 protocol, scikit-learn runtime) on the same fitted pipeline.

    .venv/bin/python benchmarks/bench_mlserver.py [--clients 8] [--rounds 2] [--quick]
        [--venv /work/venvs/mlserver] [--out benchmarks/results/bench_mlserver.md]

The shipped training pipeline is trained once and registered with ``MlflowRegistry`` in a
temporary SQLite store; our model server loads that version, and the same fitted pipeline,
read back from the registry and written with ``joblib``, is what MLServer's scikit-learn
runtime (``mlserver_sklearn.SKLearnModel``) loads. MLServer runs in its own virtualenv
(``--venv``, created when missing: ``python -m venv`` and ``pip install mlserver==1.7.*
mlserver-sklearn==1.7.* "uvloop<0.22"`` with scikit-learn, pandas, numpy, scipy, joblib and PyYAML pinned
as in ``constraints.txt``, so the pipeline loads there as here), twice: at its defaults
(adaptive batching off, one inference worker process) and with adaptive batching on
(``max_batch_size`` = the number of clients, ``max_batch_time`` 10 ms). Every server gets
``OMP_NUM_THREADS=1`` on 127.0.0.1.

The same rows go to every server: our ``POST /predict`` with ``{"records": [...]}``, MLServer's
``POST /v2/models/churn/infer`` with one V2 input per column (``content_type: pd``) and the
``predict_proba`` output. Per server and payload (1 row, 100 rows): a latency run (one client,
one request at a time on one keep-alive urllib3 connection, the HTTP client under
``requests``: p50, p99) and a throughput run (``--clients`` concurrent httpx clients
sharing a fixed number of requests: req/s, p50, p99), interleaved over ``--rounds`` rounds,
the best round counting. The limit is the pipeline's own ``predict_proba`` on the same rows in
this process (median of many calls); overhead = the one-client p50 minus it. Goal (issue 25):
ahead of MLServer on throughput with p99 no worse, and the 1-row p50 within 2 ms of the raw
model call.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the raw call, like the servers: one thread

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import urllib3  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402
from bench_serving import register_model, start_ours  # noqa: E402

from churn_platform.core.synthetic import SyntheticSpec, generate  # noqa: E402
from churn_platform.targets.local import child_env, log_tail, stop_process  # noqa: E402
from churn_platform.testing import canonical, free_port, to_records  # noqa: E402

DEFAULT_VENV = Path("/work/venvs/mlserver")
# uvloop 0.22 breaks MLServer 1.7.1's inference workers ("There is no current event loop",
# SeldonIO/MLServer issue 2286; MLflow pins uvloop<0.22 for the same reason)
MLSERVER = ["mlserver==1.7.*", "mlserver-sklearn==1.7.*", "uvloop<0.22"]
PINNED = ("scikit-learn", "pandas", "numpy", "scipy", "joblib", "PyYAML")
MODEL = "churn"
OURS = "churn_platform"
ML_DEFAULT = "MLServer (defaults)"
ML_BATCHING = "MLServer (adaptive batching)"
P50_GOAL_MS = 2.0
# the V2 datatype of each canonical dtype, and the columns sent as text
V2_TYPES = {
    "Int64": "INT64",
    "float64": "FP64",
    "boolean": "BOOL",
    "string": "BYTES",
    "datetime64[ns]": "BYTES",
}


def pins() -> list[str]:
    """``constraints.txt``'s pins of the packages the pipeline needs to load."""
    wanted = {p.lower() for p in PINNED}
    lines = (common.ROOT / "constraints.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.split("==")[0].strip().lower() in wanted]


def ensure_venv(venv: Path) -> Path:
    """The virtualenv's python, creating the venv and installing MLServer when missing."""
    python = venv / "bin" / "python"
    check = [
        str(python),
        "-c",
        "import mlserver, mlserver_sklearn, sklearn, yaml, uvloop; "
        "assert tuple(map(int, uvloop.__version__.split('.')[:2])) < (0, 22)",
    ]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *MLSERVER, *pins()], check=True)
    return python


def venv_versions(python: Path) -> dict[str, str]:
    """Versions of MLServer and the pinned packages inside the virtualenv."""
    names = ["mlserver", "mlserver-sklearn", "scikit-learn", "pandas", "numpy", "uvloop"]
    code = (
        "import json; from importlib import metadata as m; "
        f"print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def v2_body(frame: pd.DataFrame) -> bytes:
    """A V2 inference request: one input per column, decoded by MLServer as a DataFrame."""
    inputs = []
    for column in frame.columns:
        kind = V2_TYPES[str(frame[column].dtype)]
        data = json.loads(v2_column(frame[column]))
        entry: dict[str, Any] = {"name": column, "shape": [len(frame)], "datatype": kind}
        if kind == "BYTES":
            entry["parameters"] = {"content_type": "str"}
        inputs.append({**entry, "data": data})
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": inputs,
        "outputs": [{"name": "predict_proba"}],
    }
    return json.dumps(body).encode()


@dataclass
class MLServer:
    """A running ``mlserver start`` and where to send requests."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def start_mlserver(
    python: Path, model_file: Path, work: Path, name: str, batching: tuple[int, float] | None
) -> MLServer:
    """``mlserver start`` on a folder holding the settings and one model (the joblib file)."""
    folder = work / name
    folder.mkdir()
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    settings = {
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "host": "127.0.0.1",
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model: dict[str, Any] = {
        "name": MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_file), "version": "1"},
    }
    if batching is not None:
        model["max_batch_size"], model["max_batch_time"] = batching
    (folder / "model-settings.json").write_text(json.dumps(model))
    log = work / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(python.parent / "mlserver"), "start", str(folder)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlserver exited:\n{log_tail(log)}")
        try:
            if httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200:
                return MLServer(proc, url, log)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlserver not ready after 180 s:\n{log_tail(log)}")
        time.sleep(0.3)


def stop_mlserver(server: MLServer) -> None:
    """Stop MLServer and its inference workers (one process group)."""
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


@dataclass
class Cell:
    """One measured run: a server, a payload, a number of clients."""

    server: str
    payload: str
    clients: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_ms: float | None = None  # ours: the mean its own /metrics histogram saw

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


async def _load(url: str, body: bytes, total: int, clients: int) -> tuple[float, list[float], int]:
    """``total`` requests from ``clients`` concurrent httpx clients (one connection each)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    left = [total]
    errors = [0]
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one_client() -> None:
            while left[0] > 0:
                left[0] -= 1
                start = time.perf_counter()
                answer = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                if answer.status_code != 200:
                    errors[0] += 1

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    return seconds, latencies, errors[0]


def _one_client(url: str, body: bytes, total: int) -> tuple[float, list[float], int]:
    """``total`` requests one at a time on one keep-alive urllib3 connection (the HTTP
    client under ``requests``): the latency a plain Python client sees."""
    parts = urllib3.util.parse_url(url)
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    errors = 0
    with urllib3.HTTPConnectionPool(parts.host, parts.port, maxsize=1, timeout=120) as pool:
        start = time.perf_counter()
        for _ in range(total):
            sent = time.perf_counter()
            answer = pool.urlopen("POST", parts.path, body=body, headers=headers)
            latencies.append(time.perf_counter() - sent)
            errors += answer.status != 200
        seconds = time.perf_counter() - start
    return seconds, latencies, errors


def measure(server: str, url: str, payload: str, body: bytes, total: int, clients: int) -> Cell:
    """A short warm-up, then ``total`` requests from ``clients`` clients: one urllib3
    connection for one client, concurrent httpx clients for several."""
    if clients == 1:
        _one_client(url, body, min(50, total))
        seconds, latencies, errors = _one_client(url, body, total)
    else:
        asyncio.run(_load(url, body, min(50, total), clients))
        seconds, latencies, errors = asyncio.run(_load(url, body, total, clients))
    ms = np.asarray(latencies) * 1000
    return Cell(
        server,
        payload,
        clients,
        total,
        errors,
        seconds,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
    )


def plain_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with NumPy dtypes (int64, float64, bool, str objects, dates as text): what
    MLServer's pandas codec hands the model, where our server builds the canonical
    extension dtypes (Int64, boolean, string, datetime64)."""
    return pd.DataFrame({c: json.loads(v2_column(frame[c])) for c in frame.columns})


def v2_column(values: pd.Series) -> str:
    """A column's values as the JSON list a V2 input carries."""
    if str(values.dtype).startswith("datetime"):
        return json.dumps(values.dt.strftime("%Y-%m-%d").tolist())
    return json.dumps([v.item() if hasattr(v, "item") else v for v in values.tolist()])


def server_seconds(base: str) -> tuple[float, float]:
    """(sum, count) of our server's ``/predict`` request-duration histogram."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        if line.startswith("http_request_duration_seconds_") and 'path="/predict"' in line:
            kind = line.split("{", 1)[0].rsplit("_", 1)[1]
            if kind in found:
                found[kind] += float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


def raw_ms(pipeline: Any, frame: pd.DataFrame, repeats: int) -> float:
    """Median milliseconds of the pipeline's ``predict_proba`` on ``frame`` in this process."""
    pipeline.predict_proba(frame)
    median, _, _ = common.timed(lambda: pipeline.predict_proba(frame), repeats)
    return median * 1000


def answers(ours: str, mlserver: str, records: list[dict[str, Any]], v2: bytes) -> np.ndarray:
    """Both servers' P(churn) for the same rows; ``RuntimeError`` when either refuses."""
    mine = httpx.post(f"{ours}/predict", json={"records": records}, timeout=60)
    theirs = httpx.post(
        f"{mlserver}/v2/models/{MODEL}/infer",
        content=v2,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    for who, answer in (("ours", mine), ("mlserver", theirs)):
        if answer.status_code != 200:
            raise RuntimeError(f"{who} answered {answer.status_code}: {answer.text[:500]}")
    output = theirs.json()["outputs"][0]
    proba = np.asarray(output["data"], dtype=float).reshape(output["shape"])
    return np.vstack([np.asarray(mine.json()["probabilities"]), proba[:, 1]])


def best(cells: list[Cell], server: str, payload: str, clients: int) -> Cell:
    """The best round of a cell: the highest throughput (several clients) or the lowest p50."""
    runs = [c for c in cells if (c.server, c.payload, c.clients) == (server, payload, clients)]
    if clients == 1:
        return min(runs, key=lambda c: c.p50_ms)
    return max(runs, key=lambda c: c.rps)


def render(
    cells: list[Cell],
    raw: dict[str, float],
    args: argparse.Namespace,
    command: str,
    facts: dict[str, str],
) -> str:
    """The results file."""
    n = args.clients
    servers = (OURS, ML_DEFAULT, ML_BATCHING)
    lines = [
        "# Model server beside MLServer (V2, scikit-learn runtime), same fitted pipeline",
        "",
        f"Run: {common.utc_now()} on {common.machine()}, load average {facts['load_start']} "
        f"at the start, {facts['load_end']} at the end (the machine is shared with other "
        f"work). Command: `{command}`",
        "",
        f"Versions: ours {facts['ours']}; MLServer's virtualenv ({args.venv}): {facts['theirs']}.",
        "",
        f"Model: {facts['model']}. MLServer loads the same fitted pipeline from a joblib file. "
        f"{facts['agreement']}.",
        "",
        f"Servers: one process each, `OMP_NUM_THREADS=1`, 127.0.0.1. {ML_DEFAULT}: adaptive "
        f"batching off (its default), `parallel_workers` 1 (its default: inference in one worker "
        f"process). {ML_BATCHING}: `max_batch_size` {n}, `max_batch_time` 0.01 s. Clients on the "
        f"same machine, the same for every server; latency = one client, one request at a time "
        f"on one keep-alive urllib3 connection (the HTTP client under `requests`; "
        f"{args.latency_1} 1-row, {args.latency_100} 100-row requests); throughput = {n} "
        f"concurrent httpx clients ({args.single} 1-row, {args.batch} 100-row requests); "
        f"{args.rounds} rounds "
        "interleaved, best round shown (all below). Raw = the pipeline's `predict_proba` on the "
        "same rows in the benchmark's process, median of 200 (1 row) or 100 calls at the start "
        "of each round, best round shown (every round: "
        f"{facts['raw_rounds']}).",
        "",
        f"| payload | server | req/s ({n} clients) | rows/s | p50 ms | p99 ms | 1 client p50 ms "
        "| 1 client p99 ms | overhead over raw (1 client p50 - raw) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for payload, rows in (("1 row", 1), ("100 rows", 100)):
        lines.append(
            f"| {payload} | raw `predict_proba`, canonical dtypes (our server's frame) | | | | "
            f"| {raw[payload]:.2f} | | (the limit) |"
        )
        lines.append(
            f"| {payload} | raw `predict_proba`, NumPy dtypes (MLServer's frame) | | | | "
            f"| {raw[payload + ' plain']:.2f} | | |"
        )
        for server in servers:
            t, lat = best(cells, server, payload, n), best(cells, server, payload, 1)
            lines.append(
                f"| {payload} | {server} | {t.rps:.0f} | {t.rps * rows:.0f} | {t.p50_ms:.1f} "
                f"| {t.p99_ms:.1f} | {lat.p50_ms:.2f} | {lat.p99_ms:.2f} "
                f"| {lat.p50_ms - raw[payload]:+.2f} |"
            )
    lines += ["", "Goals (issue 25):", "", "| payload | against | throughput ours / theirs "
              f"({n} clients) | ahead | p99 ours / theirs | p99 no worse |", "|---|---|---:|---|---:|---|"]  # fmt: skip
    for payload in ("1 row", "100 rows"):
        ours = best(cells, OURS, payload, n)
        for server in (ML_DEFAULT, ML_BATCHING):
            theirs = best(cells, server, payload, n)
            ratio, p99 = ours.rps / theirs.rps, ours.p99_ms / theirs.p99_ms
            lines.append(
                f"| {payload} | {server} | {ratio:.2f}x | {'met' if ratio > 1 else 'NOT met'} "
                f"| {p99:.2f}x | {'met' if p99 <= 1 else 'NOT met'} |"
            )
    p50 = best(cells, OURS, "1 row", 1).p50_ms
    gap, plain_gap = p50 - raw["1 row"], p50 - raw["1 row plain"]
    lines += [
        "",
        f"1-row p50 of one client minus the raw call: {gap:+.2f} ms against the raw call on "
        f"the canonical frame our server builds (goal <= {P50_GOAL_MS:g} ms: "
        f"{'met' if gap <= P50_GOAL_MS else 'NOT met'}), {plain_gap:+.2f} ms against the raw "
        f"call on NumPy dtypes ({'met' if plain_gap <= P50_GOAL_MS else 'NOT met'}). The p50 "
        "includes the client (urllib3), HTTP on loopback, JSON, the record checks and the frame; "
        "the last column of the rounds below is our server's own mean time per request (its "
        "`/metrics` histogram over the same requests: body read to answer built), the rest of "
        "a client's time is the client and HTTP.",
        "",
        "All rounds:",
        "",
        "| server | payload | clients | requests | errors | seconds | req/s | p50 ms | p99 ms "
        "| ours: server-side mean ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        inside = "" if c.server_ms is None else f"{c.server_ms:.2f}"
        lines.append(
            f"| {c.server} | {c.payload} | {c.clients} | {c.requests} | {c.errors} "
            f"| {c.seconds:.2f} | {c.rps:.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | {inside} |"
        )
    return "\n".join(lines) + "\n"


def run_rounds(
    urls: dict[str, str],
    bodies: dict[tuple[str, str], bytes],
    args: argparse.Namespace,
    raw_probe: Callable[[], dict[str, float]],
) -> tuple[list[Cell], list[dict[str, float]]]:
    """Every (server, payload, clients) cell, ``args.rounds`` times, interleaved; each round
    starts with the raw calls (``raw_probe``), so the limit is read under the same load."""
    cells: list[Cell] = []
    raws: list[dict[str, float]] = []
    plan = (
        ("1 row", 1, args.latency_1),
        ("1 row", args.clients, args.single),
        ("100 rows", 1, args.latency_100),
        ("100 rows", args.clients, args.batch),
    )
    for _ in range(args.rounds):
        raws.append(raw_probe())
        print("raw predict_proba ms:", {k: round(v, 2) for k, v in raws[-1].items()}, flush=True)
        for payload, clients, total in plan:
            for server, url in urls.items():
                body = bodies[(OURS if server == OURS else "v2", payload)]
                base = url.removesuffix("/predict")
                before = server_seconds(base) if server == OURS else None
                cell = measure(server, url, payload, body, total, clients)
                if before is not None:
                    after = server_seconds(base)
                    cell.server_ms = 1000 * (after[0] - before[0]) / (after[1] - before[1])
                if cell.errors:
                    raise RuntimeError(f"{server} answered {cell.errors} errors ({payload})")
                print(
                    f"{server:30s} {payload:8s} x{clients}: {cell.rps:6.0f} req/s "
                    f"p50 {cell.p50_ms:7.2f} ms p99 {cell.p99_ms:7.2f} ms",
                    flush=True,
                )
                cells.append(cell)
    return cells, raws


def main() -> None:
    """Run the benchmark and write the markdown report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--single", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--latency-1", type=int, default=400)
    parser.add_argument("--latency-100", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one round, a third of the requests")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--out", default=str(common.result_path(__file__)))
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
        for name in ("single", "batch", "latency_1", "latency_100"):
            setattr(args, name, max(50, getattr(args, name) // 3))
    command = common.command_line(__file__)
    args.out = str(Path(args.out).resolve())
    python = ensure_venv(args.venv)
    facts = {
        "load_start": common.load_text(),
        "theirs": ", ".join(f"{k} {v}" for k, v in venv_versions(python).items()),
        "ours": common.versions_text("scikit-learn", "pandas", "numpy", "starlette", "uvicorn"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # a SQLite store's default artifact root is ./mlruns: keep it in tmp
        tracking_uri, model_uri, facts["model"] = register_model("real", work)
        import joblib

        from churn_platform.resources.mlflow_registry import MlflowRegistry

        pipeline = MlflowRegistry(tracking_uri=tracking_uri).load_model("1")
        model_file = work / "model.joblib"
        joblib.dump(pipeline, model_file)
        frame = canonical(generate(SyntheticSpec(n_rows=400, seed=5, id_offset=500_000)))
        frame = frame.dropna().head(100).reset_index(drop=True)  # V2 integers take no nulls
        records = to_records(frame)
        plain = plain_frame(frame)

        def raw_probe() -> dict[str, float]:
            return {
                "1 row": raw_ms(pipeline, frame.head(1), 200),
                "100 rows": raw_ms(pipeline, frame, 100),
                "1 row plain": raw_ms(pipeline, plain.head(1), 200),
                "100 rows plain": raw_ms(pipeline, plain, 100),
            }

        bodies = {
            (OURS, "1 row"): json.dumps({"records": records[:1]}).encode(),
            (OURS, "100 rows"): json.dumps({"records": records}).encode(),
            ("v2", "1 row"): v2_body(frame.head(1)),
            ("v2", "100 rows"): v2_body(frame),
        }
        ours_pid, ours_port = start_ours(tracking_uri, model_uri, work)
        servers: list[MLServer] = []
        try:
            servers.append(start_mlserver(python, model_file, work, "mlserver-default", None))
            servers.append(
                start_mlserver(python, model_file, work, "mlserver-batching", (args.clients, 0.01))
            )
            ours_url = f"http://127.0.0.1:{ours_port}"
            expected = pipeline.predict_proba(frame)[:, 1]
            diffs = [
                float(
                    np.max(
                        np.abs(
                            answers(ours_url, s.url, records, bodies[("v2", "100 rows")]) - expected
                        )
                    )
                )
                for s in servers
            ]
            facts["agreement"] = (
                "Answers on the 100 rows: max |p - raw predict_proba| over ours and MLServer "
                f"(both configurations) = {max(diffs):.1e}"
            )
            infer = f"/v2/models/{MODEL}/infer"
            urls = {
                OURS: f"{ours_url}/predict",
                ML_DEFAULT: servers[0].url + infer,
                ML_BATCHING: servers[1].url + infer,
            }
            cells, raws = run_rounds(urls, bodies, args, raw_probe)
        finally:
            stop_process(ours_pid)
            for server in servers:
                stop_mlserver(server)
    facts["load_end"] = common.load_text()
    raw = {key: min(r[key] for r in raws) for key in raws[0]}  # the best round, as for p50
    facts["raw_rounds"] = "; ".join(
        ", ".join(f"{k} {v:.2f} ms" for k, v in r.items()) for r in raws
    )
    common.write_result(args.out, render(cells, raw, args, command, facts))


if __name__ == "__main__":
    main()
