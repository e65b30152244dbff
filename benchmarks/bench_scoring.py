"""Scoring a week of 10M customers as ``churn_scores`` does, against the limit: the raw
``predict_proba`` of the same fitted pipeline on the same validated frame.

The shipped training pipeline (``core.training.train`` on 20k synthetic rows, as
``bench_serving.py`` builds it) is registered in a fresh MLflow SQLite store and made
champion; ``ChampionScorer.load`` loads it as the asset does. One validated frame of
``--rows`` synthetic customers (the pandas engine's contract) is built once and written as
Parquet; each measurement runs in its own child process that reads that file, so the peak
RSS (the kernel's ``VmHWM``) is the measured step's plus the frame's:

1. the limit: ``pipeline.predict_proba(frame[features])[:, 1]`` of the loaded pipeline;
2. the pandas engine: ``core.scores_step.score_week`` (pyfunc probabilities, the
   serving-path sample, rank, decile, identity columns, the five checks, the metadata)
   and the Parquet bytes the asset writes (``storage.write_frame``), timed apart;
3. the Spark engine (``--master``, default ``local[2]``): ``score_week_on_spark`` on the same
   rows read by Spark, then the Parquet write the asset makes (on Spark); the driver
   process's peak RSS (Python) and the JVM's.

    python benchmarks/bench_scoring.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

GIB = 1024**3
WEEK = "2026-11-15"

_SETUP = """
import json, os, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from churn_platform.core import scores as sc
from churn_platform.core import scores_step as step
from churn_platform.resources.champion_scorer import ChampionScorer
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.storage import frame_to_parquet_bytes
work, what = Path(sys.argv[1]), sys.argv[2]
scorer = ChampionScorer.load(MlflowRegistry(tracking_uri=f"sqlite:///{work / 'mlflow.db'}"))
meta = json.loads((work / "validated.json").read_text())
def hwm():
    lines = Path("/proc/self/status").read_text().splitlines()
    return int([l for l in lines if l.startswith("VmHWM")][0].split()[1]) * 1024
out = {}
"""

_PANDAS = """
frame = pd.read_parquet(work / "validated.parquet")
out["rows"], out["frame_peak"] = len(frame), hwm()
run = ("bench", "2026-11-16T04:00:00+00:00")
if what == "limit":
    started, cpu = time.perf_counter(), time.process_time()
    p = scorer.pipeline.predict_proba(frame[list(scorer.spec.feature_names)])[:, 1]
    out["seconds"], out["cpu"] = time.perf_counter() - started, time.process_time() - cpu
    out["mean"] = float(p.mean())
else:
    week = step.ValidatedWeek(meta["week"], frame, meta["version"], [], "bench", scorer.spec.id_column)
    started, cpu = time.perf_counter(), time.process_time()
    scored = step.score_week(week, scorer, run, None, sc.ScoresSettings())
    out["seconds"], out["cpu"] = time.perf_counter() - started, time.process_time() - cpu
    started = time.perf_counter()
    size = len(frame_to_parquet_bytes(scored.table, False))
    out["write_seconds"] = time.perf_counter() - started
    out["mean"] = float(scored.table["probability"].mean())
    out["failed"] = [c.name for c in scored.checks if not c.passed]
    out["parquet_mib"] = size / 2**20
out["peak"] = hwm()
print(json.dumps(out))
"""

_SPARK = """
import inspect
sys.path.insert(0, sys.argv[6])
from bench_spark import Peaks
from churn_platform.core.engines import EngineConfig
from churn_platform.core.engines.spark_session import spark_session
from churn_platform.resources.storage import StorageResource
engine = EngineConfig(engine="spark", spark_master=sys.argv[3], spark_driver_memory=sys.argv[4],
                      shuffle_partitions=int(sys.argv[5]))
spark = spark_session(engine)
spark.sparkContext.setLogLevel("ERROR")
frame = spark.read.parquet(str(work / "validated.parquet"))
week = step.ValidatedWeek(meta["week"], frame, meta["version"], [], "bench",
                          scorer.spec.id_column, "spark")
run = ("bench", "2026-11-16T04:00:00+00:00")
storage = StorageResource(base_url=str(work / "store"))
staged = "staging" in inspect.signature(step.score_week_on_spark).parameters
peaks = Peaks()
started = time.perf_counter()
if staged:  # Spark ranks and writes the table; the checks read it
    folder = storage.staging_folder()
    scored = step.score_week_on_spark(week, scorer, run, None, sc.ScoresSettings(), folder)
else:  # the (id, probability) pairs collected to the driver, ranked in pandas
    scored = step.score_week_on_spark(week, scorer, run, None, sc.ScoresSettings())
out["seconds"] = time.perf_counter() - started
started = time.perf_counter()
if staged:
    storage.write_file("scores/week.parquet", scored.staged)
else:
    storage.write_frame("scores/week.parquet", scored.table, False)
out["write_seconds"] = time.perf_counter() - started
out["jvm"], out["workers"] = peaks.done()
out["rows"] = int(meta["rows"])
out["mean"] = float(scored.metadata["mean_probability"])
out["failed"] = [c.name for c in scored.checks if not c.passed]
out["peak"] = hwm()
out["code"] = "Spark writes the table" if staged else "collected to the driver"
print(json.dumps(out))
spark.stop()
"""


def prepare(work: Path, rows: int) -> dict[str, object]:
    """Register the shipped pipeline as champion and write the validated frame (in a child
    process, so its memory is gone before the measurements)."""
    from bench_serving import register_model

    _, _, what = register_model("real", work)
    from churn_platform.resources.mlflow_registry import MlflowRegistry

    MlflowRegistry(tracking_uri=f"sqlite:///{work / 'mlflow.db'}").set_alias("champion", "1")
    if not (work / "validated.parquet").exists():
        code = (
            "import json, sys\nfrom pathlib import Path\n"
            "from churn_platform.core.engines import EngineConfig\n"
            "from churn_platform.core.engines.validation import validate\n"
            "from churn_platform.core.spec import default_spec\n"
            "from churn_platform.core.synthetic import SyntheticSpec, generate\n"
            "work, rows = Path(sys.argv[1]), int(sys.argv[2])\n"
            "raw = generate(SyntheticSpec(n_rows=rows, as_of=sys.argv[3], seed=11))\n"
            "checked = validate(raw, default_spec(), EngineConfig())\n"
            "checked.frame.to_parquet(work / 'validated.parquet', index=False, coerce_timestamps='us')\n"
            "(work / 'validated.json').write_text(json.dumps({'week': sys.argv[3], "
            "'version': checked.version, 'rows': checked.rows}))\n"
        )
        child(code, [str(work), str(rows), WEEK])
    return {"model": what}


def child(code: str, args: list[str], pythonpath: str = "") -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (``churn_platform`` from ``pythonpath`` when given);
    its last stdout line as JSON (or {})."""
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, env=env
    )
    if done.returncode:
        raise SystemExit(f"child failed:\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="3g")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--skip-pandas", action="store_true", help="reuse --work's figures")
    parser.add_argument(
        "--before-code", default="", help="a checkout whose Spark path is measured too"
    )
    parser.add_argument("--work", default="", help="folder to keep the frame and store in")
    parser.add_argument("--out", default=str(common.result_path(__file__)))
    parser.add_argument("--quick", action="store_true", help="1M rows")
    args = parser.parse_args()
    if args.quick:
        args.rows = 1_000_000
    command, load_before = common.command_line(__file__), common.load_text()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scoring-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # a SQLite store's default artifact root is ./mlruns: keep it in work
    started = time.perf_counter()
    facts = prepare(work, args.rows)
    prepare_s = time.perf_counter() - started
    measured: dict[str, dict] = {}
    if args.skip_pandas:  # the pandas figures of an earlier run in --work
        earlier = json.loads((work / "measured.json").read_text())
        measured = {k: earlier[k] for k in ("limit", "pandas")}
    else:
        measured["limit"] = child(_SETUP + _PANDAS, [str(work), "limit"])
        measured["pandas"] = child(_SETUP + _PANDAS, [str(work), "pandas"])
        print(json.dumps(measured))
    spark_args = [args.master, args.driver_memory, str(args.shuffle_partitions)]
    spark_args.append(str(common.BENCHMARKS))
    if args.before_code:  # the Spark path of an earlier checkout, for a before/after
        measured["spark_before"] = child(
            _SETUP + _SPARK, [str(work), "spark", *spark_args], args.before_code
        )
        print(json.dumps(measured["spark_before"]))
    if not args.skip_spark:
        measured["spark"] = child(_SETUP + _SPARK, [str(work), "spark", *spark_args])
        print(json.dumps(measured["spark"]))
    (work / "measured.json").write_text(json.dumps(measured))
    common.write_result(args.out, render(measured, args, command, load_before, prepare_s, facts))


def render(  # type: ignore[no-untyped-def]
    measured: dict[str, dict], args, command: str, load_before: str, prepare_s: float, facts
) -> str:
    """The results file."""
    limit = measured["limit"]
    rows = [
        "| step | rows | seconds (CPU s) | ratio to the limit | Parquet write s "
        "| total / limit | peak RSS, Python (frame alone) | peak RSS, JVM | failed checks |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    names = {
        "limit": "the limit: `pipeline.predict_proba(frame)[:, 1]`",
        "pandas_before": "pandas engine, before (pandas string sort, `Index.difference`)",
        "pandas": "pandas engine: `score_week` (+ the asset's Parquet bytes)",
        "spark_before": f"Spark engine `{args.master}`, before: pairs collected to the driver",
        "spark": f"Spark engine `{args.master}`: `score_week_on_spark`, table written by Spark",
    }
    for key, m in measured.items():
        write = m.get("write_seconds", 0.0)
        frame_peak = f" ({m['frame_peak'] / GIB:.2f} GiB)" if "frame_peak" in m else ""
        cpu = f" ({m['cpu']:.1f})" if "cpu" in m else ""
        jvm = f"{m['jvm'] / GIB:.2f} GiB" if m.get("jvm") else "—"
        rows.append(
            f"| {names[key]} | {m['rows']:,} | {m['seconds']:.1f}{cpu} | "
            f"{m['seconds'] / limit['seconds']:.2f}x | {write:.1f} | "
            f"{(m['seconds'] + write) / limit['seconds']:.2f}x | "
            f"{m['peak'] / GIB:.2f} GiB{frame_peak} | {jvm} | "
            f"{', '.join(m.get('failed', [])) or 'none'} |"
        )
    table = "\n".join(rows)
    return f"""# Weekly scoring benchmark (`churn_scores`' scoring step against `predict_proba`)

- date: {common.utc_now()}
- command: `{command}`
- machine: {common.machine(memory=True)}, load average {load_before} (before), {common.load_text()} (after)
- model: {facts["model"]}, registered and made champion; loaded by `ChampionScorer.load`
- frame: {args.rows:,} synthetic customers through the pandas engine's contract, written as
  Parquet and read by each measuring child process (setup {prepare_s:.0f} s)
- {common.versions_text("pandas", "numpy", "scikit-learn", "mlflow", "pyarrow", "pyspark")}

{table}

Each row is a fresh child process; "peak RSS" is its `VmHWM` (Python process; for Spark the
driver's Python, not the JVM). "frame alone": the peak right after reading the validated frame.
Included in `score_week`: the pyfunc's probabilities of every row, the serving-path parity
sample (200 rows through the model server's schema and code), the table (entity id,
probability, rank with ties by entity id, decile, week, model version, data version, spec
hash, run id, time), the five checks (one row per customer, unique ids, range, parity, PSI
with no previous week) and the metadata (deciles). The Parquet write is timed apart: the
bytes `storage.write_frame` writes (pandas), or the Spark job writing the Parquet (Spark).
Not included: reading the source and the contract (`bench_contract.py`, `bench_spark.py`),
the database upsert. Goal: the pandas engine within 1.5x of the limit.
"""


if __name__ == "__main__":
    main()
