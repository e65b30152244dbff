"""Harness shared by the tests and the benchmarks (never imported by the platform itself).

A real MLflow store with registered models, model-server and Prometheus processes on
127.0.0.1, and a paced client: ``churn_platform_tests`` and ``benchmarks`` both start the
real thing through these, so a benchmark measures exactly what the tests check. The
``registered_models`` pytest fixture in ``churn_platform_tests/conftest.py`` wraps
``make_registered_models``.

``make_registered_models`` logs two small pipelines (one-hot + logistic regression,
trained on synthetic rows) to a ``sqlite:///`` store and registers them as
``churn_model`` versions 1 and 2, with a signature inferred from the input frame.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from churn_platform.core import schema as s
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources import churn_flavor
from churn_platform.settings import MODEL_NAME
from churn_platform.targets.local import (
    bind_socket,
    child_env,
    spawn,
    stop_process,
    wait_healthy,
)

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"


#: The experiment ``log_and_register`` logs to (artefacts beside the store, not ``./mlruns``).
_TESTING_EXPERIMENT = "churn_testing"


@dataclass
class RegisteredModels:
    """A temporary MLflow store holding ``churn_model`` versions."""

    tracking_uri: str
    root: Path
    model_uris: dict[str, str]  # version -> models:/churn_model/<version>
    pipelines: dict[str, Any]  # version -> the fitted pipeline that was logged
    rows: pd.DataFrame  # canonical rows (never used for training) to score


def train_logistic(frame: pd.DataFrame, c: float) -> Any:
    """One-hot(contract_type, region) + numeric passthrough + logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    features = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), [s.CONTRACT_TYPE, s.REGION]),
            ("numbers", "passthrough", list(s.NUMERIC_FEATURES)),
        ]
    )
    pipeline = Pipeline([("features", features), ("model", LogisticRegression(C=c, max_iter=2000))])
    return pipeline.fit(frame[list(s.MODEL_INPUT_COLUMNS)], frame[s.TARGET])


def log_and_register(
    pipeline: Any,
    frame: pd.DataFrame,
    tracking_uri: str,
    pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Log ``pipeline`` as the platform does (``churn_flavor``: pyfunc answers P(churn)) with a
    signature (and MLmodel ``metadata``, e.g. the spec under ``churn_spec``) and register it
    as ``churn_model``; return the version.

    Artefacts go to ``artifacts/`` beside a ``sqlite:///`` store's file (MLflow's default for
    a new store is ``./mlruns`` under the current directory).
    """
    import mlflow
    import sklearn
    from mlflow.models import infer_signature

    X = frame[list(s.MODEL_INPUT_COLUMNS)].head(200)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        client = mlflow.MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(_TESTING_EXPERIMENT)
        if experiment is None:
            location = None
            if tracking_uri.startswith("sqlite:///"):
                db = Path(tracking_uri.removeprefix("sqlite:///"))
                location = (db.parent / "artifacts").resolve().as_uri()
            experiment_id = client.create_experiment(_TESTING_EXPERIMENT, location)
        else:
            experiment_id = experiment.experiment_id
        with mlflow.start_run(experiment_id=experiment_id):
            info = churn_flavor.log_model(
                pipeline,
                name="model",
                signature=infer_signature(X, churn_flavor.ChurnProbability(pipeline).predict(X)),
                input_example=X.head(2),
                pip_requirements=pip_requirements
                or [f"scikit-learn=={sklearn.__version__}", "pandas"],
                metadata=metadata,
            )
        return register_verified(info.model_uri, MODEL_NAME, tracking_uri)
    finally:
        mlflow.set_tracking_uri(previous)


def register_verified(model_uri: str, name: str, tracking_uri: str) -> str:
    """Register a logged model as the platform does, with its artefact's digest (a server
    refuses a version without it); return the version."""
    import mlflow

    from churn_platform.serving.model_server.loading import (
        ARTIFACT_DIGEST_TAG,
        logged_model_digest,
    )

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        digest = logged_model_digest(model_uri, tracking_uri)
        created = mlflow.register_model(model_uri, name, tags={ARTIFACT_DIGEST_TAG: digest})
    finally:
        mlflow.set_tracking_uri(previous)
    return str(created.version)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The model input columns with ``schema.CANONICAL_DTYPES`` (what the server builds)."""
    X = frame[list(s.MODEL_INPUT_COLUMNS)]
    return X.astype({c: s.CANONICAL_DTYPES[c] for c in X.columns})


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON request records (dates as ISO strings)."""
    X = frame[list(s.MODEL_INPUT_COLUMNS)].copy()
    X[s.SIGNUP_DATE] = pd.to_datetime(X[s.SIGNUP_DATE]).dt.strftime("%Y-%m-%d")
    return json.loads(X.to_json(orient="records"))


def make_registered_models(root: Path) -> RegisteredModels:
    """Train, log and register versions 1 (C=1.0) and 2 (C=0.05) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    train = generate(SyntheticSpec(n_rows=3000, seed=11))
    rows = generate(SyntheticSpec(n_rows=300, seed=99, id_offset=10_000))
    pipelines: dict[str, Any] = {}
    uris: dict[str, str] = {}
    for c in (1.0, 0.05):
        pipeline = train_logistic(train, c)
        version = log_and_register(pipeline, train, tracking_uri)
        pipelines[version] = pipeline
        uris[version] = f"models:/{MODEL_NAME}/{version}"
    return RegisteredModels(tracking_uri, root, uris, pipelines, rows)


@dataclass
class RunningServer:
    """A model server process started by ``start_model_server``."""

    pid: int
    url: str
    log: Path
    version: str
    inference_log: Path


@contextlib.contextmanager
def start_model_server(
    models: RegisteredModels,
    version: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningServer]:
    """Run ``python -m churn_platform.serving model-server`` on a free port; stop it after."""
    sock = bind_socket()
    port = sock.getsockname()[1]
    log = workdir / f"model-{version}-{port}.log"
    inference_log = workdir / f"inference-{version}-{port}.jsonl"
    env = child_env({"MLFLOW_TRACKING_URI": models.tracking_uri, **(extra_env or {})})
    args = ["model-server", "--model-uri", models.model_uris[version], "--version", version]
    pid = spawn([*args, "--inference-log", str(inference_log)], log, sock, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/health", pid, log, 90.0, f"test model server {version}")
        yield RunningServer(pid, url, log, version, inference_log)
    finally:
        stop_process(pid)


@contextlib.contextmanager
def start_router(
    state_file: Path,
    extra_env: dict[str, str] | None = None,
    port: int = 0,
    args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run ``python -m churn_platform.serving router`` on ``port`` (0: a free one), its log
    next to ``state_file``; yield its URL and stop it after."""
    sock = bind_socket(port=port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    log = state_file.with_suffix(".log")
    pid = spawn(["router", "--state-file", str(state_file), *args], log, sock, child_env(extra_env))
    try:
        wait_healthy(url + "/-/health", pid, log, 30.0, "router")
        yield url
    finally:
        stop_process(pid)


def free_port() -> int:
    """A port nobody listens on right now (for programs that cannot take a socket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(
    process: subprocess.Popen[Any],
    url: str,
    log: Path,
    what: str,
    timeout: float,
    interval: float,
) -> None:
    """Poll ``url`` until it answers 200 (a condition, bounded by ``timeout``); raise with the
    tail of ``log`` if the ``process`` exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} not ready at {url} after {timeout:g}s:\n{log.read_text()[-3000:]}"
            )
        time.sleep(interval)


def prometheus_installed() -> bool:
    """True if the ``prometheus`` binary ``start_prometheus`` runs is installed."""
    return Path(PROMETHEUS_BIN).exists()


@dataclass
class RunningPrometheus:
    """A Prometheus server started by ``start_prometheus``."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def start_prometheus(config_file: Path, workdir: Path) -> Iterator[RunningPrometheus]:
    """Run the real ``prometheus`` binary on a free port with its own storage; stop it after."""
    if not prometheus_installed():
        raise FileNotFoundError(
            f"prometheus binary not found at {PROMETHEUS_BIN}: apt-get install prometheus"
        )
    port = free_port()
    log = workdir / "prometheus.log"
    storage = workdir / "prometheus-data"
    storage.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS_BIN,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url + "/-/ready", log, "prometheus", timeout=30, interval=0.1)
        yield RunningPrometheus(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def offline_probabilities(
    models: RegisteredModels, version: str, frame: pd.DataFrame
) -> np.ndarray:
    """What the logged pipeline says offline for ``frame`` (canonical dtypes)."""
    return models.pipelines[version].predict_proba(canonical(frame))[:, 1]


@dataclass
class PacedLoad:
    """A paced client sending ``record`` to ``url``/predict ``rate`` times a second in a thread.

    ``results`` collects (monotonic time, HTTP status or -1, x-model-version) per request.
    With ``one_by_one`` each request holds the next single record of ``record`` (cycling)
    instead of all of them.
    """

    url: str
    record: list[dict]
    rate: float = 40.0
    results: list[tuple[float, int, str]] = field(default_factory=list)
    one_by_one: bool = False

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        period = 1.0 / self.rate
        with httpx.Client(base_url=self.url, timeout=10) as client:
            next_at = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                body = [self.record[sent % len(self.record)]] if self.one_by_one else self.record
                sent += 1
                try:
                    r = client.post("/predict", json={"records": body})
                    status, version = r.status_code, r.headers.get("x-model-version", "")
                except httpx.HTTPError:
                    status, version = -1, ""
                self.results.append((time.monotonic(), status, version))
                next_at += period
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> PacedLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


REPO_ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def dagster_webserver(
    env: dict[str, str], log_path: Path, *, timeout: float = 600.0
) -> Iterator[str]:
    """A real ``dagster-webserver -w workspace.yaml`` on 127.0.0.1; yields its base URL.

    ``env`` is the whole environment (DAGSTER_HOME, CHURN_HOME, ...). Ready when
    ``/server_info`` answers 200 (a condition, not a wait); the webserver runs in its own
    process group so its code server stops with it, by PID, on exit.
    """
    import signal
    import sys

    webserver = Path(sys.executable).parent / "dagster-webserver"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until_ready(proc, url + "/server_info", log_path, "webserver", timeout, interval=0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- a second table of another shape (issue 12's end-to-end proof) ------------------------

SECOND_TABLE_ID = "account_id"
SECOND_TABLE_TARGET = "churn"
SECOND_TABLE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "plan": ("basic", "standard", "premium"),
    "billing": ("monthly", "yearly"),
    "payment_method": ("card", "bank", "invoice", "paypal"),
    "channel": ("web", "store", "partner"),
    "country": ("uk", "de", "fr", "es", "it"),
}
SECOND_TABLE_FLAGS: tuple[str, ...] = ("auto_renew", "has_mobile_app", "paperless")
# numeric columns exported as text, with this share of blank cells
SECOND_TABLE_BLANKS: dict[str, float] = {
    "usage_hours": 0.03,
    "avg_session_min": 0.02,
    "tickets_90d": 0.02,
    "monthly_fee": 0.01,
}


def second_table(n_rows: int = 5_000, seed: int = 0) -> pd.DataFrame:
    """A churn table unlike the example's, as a CSV export holds it (every cell text).

    20 columns: ``account_id`` (``A000001``...), five categoricals with 2-5 levels
    (``SECOND_TABLE_CATEGORIES``), three yes/no or true/false flags, nine numeric columns
    stored as text (four with blank cells, ``SECOND_TABLE_BLANKS``), a free-text ``email``
    (one per account: not a feature) and the target ``churn`` (``yes``/``no``). No date and
    no hour column.

    The mechanism (log-odds of churn, additive): +0.4; ``billing`` yearly -2.2; ``plan``
    basic +0.8, premium -1.0; ``auto_renew`` yes -1.5; +0.8 per ``tickets_90d``;
    -0.08 per ``usage_hours`` above 20; -0.04 per ``age_months``; +1.0 per
    ``late_payments``; -0.3 per ``nps`` point above 5. ``payment_method``, ``channel``,
    ``country``, ``has_mobile_app``, ``paperless``, ``seats``, ``avg_session_min``,
    ``discount_pct`` and ``monthly_fee`` are noise. A gradient-boosting model reaches a
    holdout AUC near 0.9.
    """
    rng = np.random.default_rng(seed)
    n = n_rows

    def pick(values: tuple[str, ...], p: list[float] | None = None) -> np.ndarray:
        return rng.choice(np.array(values, dtype=object), n, p=p)

    cats = SECOND_TABLE_CATEGORIES
    plan = pick(cats["plan"], [0.4, 0.4, 0.2])
    billing = pick(cats["billing"], [0.6, 0.4])
    auto_renew = rng.random(n) < 0.55
    tickets = rng.poisson(1.2, n)
    usage = np.round(rng.gamma(3.0, 8.0, n), 1)
    age = rng.integers(1, 121, n)
    late = rng.poisson(0.5, n)
    nps = rng.integers(0, 11, n)
    logit = (
        0.4
        - 2.2 * (billing == "yearly")
        + 0.8 * (plan == "basic")
        - 1.0 * (plan == "premium")
        - 1.5 * auto_renew
        + 0.8 * tickets
        - 0.08 * (usage - 20)
        - 0.04 * age
        + 1.0 * late
        - 0.3 * (nps - 5)
    )
    churn = rng.random(n) < 1 / (1 + np.exp(-logit.astype(float)))
    ids = np.array([f"A{i:06d}" for i in range(1, n + 1)], dtype=object)
    yes_no = np.array(["no", "yes"], dtype=object)
    frame = pd.DataFrame(
        {
            SECOND_TABLE_ID: ids,
            "plan": plan,
            "billing": billing,
            "payment_method": pick(cats["payment_method"]),
            "channel": pick(cats["channel"], [0.6, 0.3, 0.1]),
            "country": pick(cats["country"]),
            "auto_renew": yes_no[auto_renew.astype(int)],
            "has_mobile_app": yes_no[(rng.random(n) < 0.5).astype(int)],
            "paperless": np.array(["false", "true"], dtype=object)[
                (rng.random(n) < 0.7).astype(int)
            ],
            "seats": rng.integers(1, 201, n).astype(str),
            "usage_hours": usage.astype(str),
            "avg_session_min": np.round(rng.normal(22.0, 6.0, n).clip(1, None), 2).astype(str),
            "tickets_90d": tickets.astype(str),
            "monthly_fee": np.round(rng.uniform(9.0, 199.0, n), 2).astype(str),
            "discount_pct": np.round(rng.uniform(0.0, 40.0, n), 1).astype(str),
            "age_months": age.astype(str),
            "late_payments": late.astype(str),
            "nps": nps.astype(str),
            "email": np.array([f"user{i}@example{i % 97}.com" for i in range(n)], dtype=object),
            SECOND_TABLE_TARGET: yes_no[churn.astype(int)],
        }
    )
    for column, share in SECOND_TABLE_BLANKS.items():
        frame.loc[rng.random(n) < share, column] = ""
    return frame


# -- a table shaped like the public IBM Telco customer churn export (issue 25: raw records) --

TELCO_SPEC = """
version: 1
name: telco
description: A table shaped like the public IBM Telco customer churn export.
entity_id:
  column: customer_id
  source: customerID
target:
  column: churned
  source: Churn
  positive: ["Yes"]
  negative: ["No"]
features:
  gender:                       # the source's own name
    kind: categorical
    allowed: [Female, Male]
    encoding: [onehot]
  senior_citizen:
    kind: boolean
    source: SeniorCitizen       # 0 / 1
  has_partner:
    kind: boolean
    source: Partner             # Yes / No
  tenure_months:
    kind: integer
    source: tenure
    range: [0, 100]
  internet_service:
    kind: categorical
    source: InternetService
    values: {"Fiber optic": fiber, "DSL": dsl, "No": none}
    allowed: [fiber, dsl, none]
    encoding: [onehot]
  contract:
    kind: categorical
    source: Contract
    values: {"Month-to-month": monthly, "One year": annual, "Two year": two_year}
    allowed: [monthly, annual, two_year]
    encoding: [onehot]
  paperless_billing:
    kind: boolean
    source: PaperlessBilling    # Yes / No
  payment_method:
    kind: categorical
    source: PaymentMethod
    values:
      "Electronic check": electronic_check
      "Mailed check": mailed_check
      "Bank transfer (automatic)": bank_transfer
      "Credit card (automatic)": credit_card
    allowed: [electronic_check, mailed_check, bank_transfer, credit_card]
    encoding: [onehot]
  monthly_charges:
    kind: numeric
    source: MonthlyCharges
    range: [0, 500]
  total_charges:
    kind: numeric
    source: TotalCharges        # text; " " for a customer in their first month
    range: [0, null]
dataset:
  max_null_rate: 0.2
"""


def telco_table(n_rows: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """Rows shaped like the IBM Telco churn export, every cell text as its CSV holds it.

    ``customerID`` (``1234-ABCDE``), ``gender``, ``SeniorCitizen`` (0/1), ``Partner`` and
    ``PaperlessBilling`` (Yes/No), ``tenure`` (months, 0-72), ``InternetService``,
    ``Contract`` (``Month-to-month``/``One year``/``Two year``), ``PaymentMethod`` (the
    export's four labels), ``MonthlyCharges``, ``TotalCharges`` (a single space for a
    customer with tenure 0) and ``Churn`` (Yes/No). Month-to-month contracts, fiber, electronic
    checks and short tenure churn more (``TELCO_SPEC`` maps it).
    """
    rng = np.random.default_rng(seed)
    n = n_rows

    def pick(values: tuple[str, ...], p: list[float]) -> np.ndarray:
        return rng.choice(np.array(values, dtype=object), n, p=p)

    contract = pick(("Month-to-month", "One year", "Two year"), [0.55, 0.25, 0.2])
    internet = pick(("Fiber optic", "DSL", "No"), [0.45, 0.35, 0.2])
    payment = pick(
        (
            "Electronic check",
            "Mailed check",
            "Bank transfer (automatic)",
            "Credit card (automatic)",
        ),
        [0.35, 0.2, 0.22, 0.23],
    )
    tenure = rng.integers(0, 73, n)
    monthly = np.round(rng.uniform(18.0, 119.0, n), 2)
    total = np.where(tenure == 0, " ", np.round(monthly * tenure, 2).astype(str))
    logit = (
        -0.5
        + 1.2 * (contract == "Month-to-month")
        - 1.0 * (contract == "Two year")
        + 0.7 * (internet == "Fiber optic")
        + 0.5 * (payment == "Electronic check")
        - 0.04 * tenure
    )
    churn = rng.random(n) < 1 / (1 + np.exp(-logit.astype(float)))
    yes_no = np.array(["No", "Yes"], dtype=object)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), dtype=object)
    return pd.DataFrame(
        {
            "customerID": [
                f"{rng.integers(1000, 9999)}-{''.join(rng.choice(letters, 5))}{i}" for i in range(n)
            ],
            "gender": pick(("Female", "Male"), [0.5, 0.5]),
            "SeniorCitizen": (rng.random(n) < 0.16).astype(int).astype(str),
            "Partner": yes_no[(rng.random(n) < 0.48).astype(int)],
            "tenure": tenure.astype(str),
            "InternetService": internet,
            "Contract": contract,
            "PaperlessBilling": yes_no[(rng.random(n) < 0.59).astype(int)],
            "PaymentMethod": payment,
            "MonthlyCharges": monthly.astype(str),
            "TotalCharges": total,
            "Churn": yes_no[churn.astype(int)],
        }
    )
