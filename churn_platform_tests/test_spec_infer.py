"""``python -m churn_platform spec infer`` and ``spec check``: a starter spec a person edits,
inferred from the rows as the pipeline's data source reads them, and a check that names
the key, line or column to fix."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn_platform import cli
from churn_platform.config import load_config
from churn_platform.core.mapping import DataSourceError
from churn_platform.core.spec import default_spec, load_spec, parse_spec
from churn_platform.core.spec_infer import InferOptions, widen
from churn_platform.core.spec_starter import infer_spec_text, protected_like
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources.data_source import SyntheticSourceResource
from churn_platform.resources.environments import platform_resources
from churn_platform.testing import SECOND_TABLE_BLANKS, second_table


def spec_cli(*args: str) -> int:
    return cli.main(["spec", *args])


@pytest.fixture
def accounts(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.csv"
    second_table(n_rows=3_000, seed=1).to_csv(path, index=False)
    return path


def test_the_second_table_becomes_a_commented_spec_that_loads(accounts: Path, tmp_path, capsys):
    out = tmp_path / "accounts.yaml"
    assert (
        spec_cli("infer", str(accounts), "--target", "churn", "--id", "account_id", "-o", str(out))
        == 0
    )
    said = capsys.readouterr().out
    assert f"wrote {out}: 17 features" in said and "spec check" in said
    text = out.read_text()
    spec = load_spec(out)
    assert spec.id_column == "account_id" and spec.target_column == "churn"
    assert spec.target.positive == ("yes",) and spec.target.negative == ("no",)
    f = spec.features
    assert f["plan"].kind == "categorical" and f["plan"].allowed == ("basic", "premium", "standard")
    assert f["country"].allowed == ("de", "es", "fr", "it", "uk")
    assert {f[n].kind for n in ("auto_renew", "has_mobile_app", "paperless")} == {"boolean"}
    assert f["tickets_90d"].kind == "integer" and f["usage_hours"].kind == "numeric"
    for column in SECOND_TABLE_BLANKS:  # blanks in numeric text are counted as nulls
        assert f[column].max_null_rate is not None and f[column].max_null_rate > 0, column
    for column in ("seats", "age_months", "nps", "discount_pct"):  # no blanks: default limit
        assert f[column].max_null_rate is None, column
    assert "email" not in f and "email: 3,000 distinct text values" in text  # left out, said why
    low, high = f["age_months"].range or (None, None)
    assert low == 0 and high == 140  # observed 1..120, 10% margin, rounded outward, kept >= 0
    assert "# observed 1..120, margin 10%" in text
    assert "distinct value(s)" in text and "% blank (" in text
    assert not spec.slices and not spec.invariances
    assert "#  - name: plan" in text  # a commented example to copy


def test_the_example_table_is_read_back_to_the_shipped_kinds(tmp_path: Path):
    rows = generate(SyntheticSpec(n_rows=4_000, seed=5, null_rate={"region": 0.02}))
    for frame in (rows, rows.astype(str)):  # typed (Parquet/SQL) and all text (CSV)
        text, spec = infer_spec_text(frame, target="churned", id_column="customer_id")
        shipped = default_spec()
        assert {n: f.kind for n, f in spec.features.items()} == {
            n: f.kind for n, f in shipped.features.items()
        }
        assert spec.features["last_login_hour"].period == 24
        assert spec.features["last_login_hour"].range == (0, 23)
        allowed = shipped.features["contract_type"].allowed or ()
        assert set(spec.features["contract_type"].allowed or ()) == set(allowed)
        assert spec.features["signup_date"].drift is False
        assert spec.target.value_map() == {"1": 1, "0": 0}
        assert (
            spec.features["region"].max_null_rate and spec.features["region"].max_null_rate > 0.02
        )
        assert parse_spec(text).hash == spec.hash


@pytest.mark.parametrize(
    ("values", "positive", "negative", "guessed"),
    [
        (["churned", "active", "active"], "churned", "active", False),
        ([1, 0, 0], 1, 0, False),
        (["True", "False", "False"], "True", "False", False),
        (["Y", "N", "N"], "Y", "N", False),
        (["gold", "lead", "lead"], "gold", "lead", True),  # unknown words: the rarer is churned
    ],
)
def test_the_target_is_recognised_or_guessed_saying_so(values, positive, negative, guessed):
    frame = pd.DataFrame({"id": [f"c{i}" for i in range(300)], "x": [i % 17 for i in range(300)]})
    frame["y"] = (values * 100)[:300]
    text, spec = infer_spec_text(frame, target="y", id_column="id")
    assert spec.target.positive == (positive,) and spec.target.negative == (negative,)
    assert ("GUESSED" in text) == guessed


def test_ranges_widen_by_the_margin_and_round_outward():
    assert widen(0, 118, 0.1, integer=True) == (0, 130)
    assert widen(-5.0, 5.0, 0.1, integer=False) == (-6.0, 6.0)
    assert widen(16.8, 856.9, 0.1, integer=False) == (0, 950)
    low, high = widen(3.0, 3.0, 0.1, integer=False)  # a constant column still gets room
    assert low < 3.0 < high


def test_a_column_named_like_a_prediction_field_is_renamed_and_keeps_its_source():
    frame = pd.DataFrame(
        {
            "id": [str(i) for i in range(1000)],
            "Probability": [i / 1000 for i in range(1000)],
            "y": ["no", "yes"] * 500,
        }
    )
    _, spec = infer_spec_text(frame, target="y", id_column="id")
    assert "probability" not in spec.features
    assert spec.source_of("probability_value") == "Probability"


def test_text_numbers_with_junk_are_numeric_and_the_junk_is_named():
    values = [str(v) for v in range(1000)]
    values[7] = "?"
    frame = pd.DataFrame(
        {"id": [str(i) for i in range(1000)], "n": values, "y": ["no", "yes"] * 500}
    )
    text, spec = infer_spec_text(frame, target="y", id_column="id")
    assert spec.features["n"].kind == "integer"
    assert "1 value(s) are not numbers (e.g. ['?'])" in text


def test_a_sql_table_is_read_like_the_sql_source(tmp_path: Path, capsys):
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        second_table(n_rows=500, seed=2).to_sql("accounts", conn, index=False)
    url = f"sqlite:///{db}"
    assert (
        spec_cli("infer", url, "--table", "accounts", "--target", "churn", "--id", "account_id")
        == 0
    )
    spec = parse_spec(capsys.readouterr().out)
    assert spec.name == "accounts" and spec.features["billing"].allowed == ("monthly", "yearly")
    assert spec_cli("infer", url, "--target", "churn", "--id", "account_id") == 2
    assert "add --table NAME or --query SQL" in capsys.readouterr().err


def test_infer_refuses_with_the_fix_not_a_traceback(accounts: Path, tmp_path: Path, capsys):
    assert spec_cli("infer", str(accounts), "--target", "churned", "--id", "account_id") == 2
    err = capsys.readouterr().err
    assert "--target 'churned' is not a column" in err and "'churn'" in err
    assert spec_cli("infer", str(accounts), "--target", "plan", "--id", "account_id") == 2
    assert "target column 'plan' has 3 distinct value(s)" in capsys.readouterr().err
    assert spec_cli("infer", str(tmp_path / "nope.csv"), "--target", "a", "--id", "b") == 2
    assert "nope.csv does not exist" in capsys.readouterr().err
    edited = tmp_path / "mine.yaml"
    edited.write_text("# my edits\n")
    args = ("infer", str(accounts), "--target", "churn", "--id", "account_id", "-o", str(edited))
    assert spec_cli(*args) == 2
    assert "exists" in capsys.readouterr().err and edited.read_text() == "# my edits\n"
    assert spec_cli(*args, "--force") == 0


def test_check_names_the_key_and_line_of_a_bad_spec(tmp_path: Path, capsys):
    text, _ = infer_spec_text(second_table(n_rows=300), target="churn", id_column="account_id")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("kind: numeric", "kind: decimal", 1))
    assert spec_cli("check", "--spec", str(bad)) == 2
    err = capsys.readouterr().err
    line = 1 + text.splitlines().index(
        next(ln for ln in text.splitlines() if ln.strip().startswith("kind: numeric"))
    )
    assert f"bad.yaml:{line}: features.usage_hours.kind: unknown kind 'decimal'" in err, err
    assert "Traceback" not in err
    bad.write_text(text.replace("slices: []", "slices: [{name: p, column: plan, equals: gold}]"))
    assert spec_cli("check", "--spec", str(bad)) == 2
    assert "value(s) ['gold'] not allowed for 'plan'" in capsys.readouterr().err
    unknown = "invariances: [{name: i, feature: nps_score, step: 1, direction: decrease}]"
    bad.write_text(text.replace("invariances: []", unknown))
    assert spec_cli("check", "--spec", str(bad)) == 2
    assert "invariance 'i' changes 'nps_score', not a feature" in capsys.readouterr().err


def test_check_summarises_the_spec_in_effect(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("CHURN_SPEC", raising=False)
    assert spec_cli("check") == 0
    out = capsys.readouterr().out
    assert "spec 'churn'" in out and "valid" in out and "contract_invariance" in out
    assert "support_tickets: integer in [0, open]" in out
    assert "last_login_hour: cyclical in [0, 23] period 24" in out
    monkeypatch.setenv("CHURN_SPEC", str(tmp_path / "missing.yaml"))
    assert spec_cli("check") == 2
    assert "CHURN_SPEC=" in capsys.readouterr().err


def test_check_names_a_spec_feature_the_data_lacks(accounts: Path, tmp_path: Path, capsys):
    spec_file = tmp_path / "accounts.yaml"
    args = ("infer", str(accounts), "--target", "churn", "--id", "account_id", "-o", str(spec_file))
    assert spec_cli(*args) == 0
    pd.read_csv(accounts, dtype=str).drop(columns=["nps"]).to_csv(
        tmp_path / "less.csv", index=False
    )
    capsys.readouterr()
    assert spec_cli("check", str(tmp_path / "less.csv"), "--spec", str(spec_file)) == 1
    out = capsys.readouterr().out
    assert "MISSING: spec feature 'nps' is not a column of" in out and "features.nps" in out


def test_check_runs_the_contract_and_lists_what_the_data_fails(accounts: Path, tmp_path, capsys):
    spec_file = tmp_path / "accounts.yaml"
    args = ("infer", str(accounts), "--target", "churn", "--id", "account_id", "-o", str(spec_file))
    assert spec_cli(*args) == 0
    assert spec_cli("check", str(accounts), "--spec", str(spec_file)) == 0
    assert "the data passes" in capsys.readouterr().out
    rows = pd.read_csv(accounts, dtype=str, keep_default_na=False)
    rows.loc[:9, "plan"] = "platinum"
    rows.loc[:4, "churn"] = "maybe"
    rows.to_csv(tmp_path / "worse.csv", index=False)
    assert spec_cli("check", str(tmp_path / "worse.csv"), "--spec", str(spec_file)) == 1
    out = capsys.readouterr().out
    assert "FAIL plan_in_set" in out and "10 row(s)" in out
    assert "holds value(s) ['maybe']" in out


def test_infer_options_are_validated():
    with pytest.raises(ValueError, match="margin must be in"):
        InferOptions(margin=-1)


def bank_table(n: int = 600, seed: int = 3, blank_rows: int = 0) -> pd.DataFrame:
    """A bank-churn-like table: a row index, a customer id, surnames, a protected attribute,
    plausible features and ``Exited`` 0/1 (``blank_rows`` rows lack a balance)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "RowNumber": np.arange(1, n + 1),
            "CustomerId": 15_600_000 + rng.permutation(n * 10)[:n],
            "Surname": [f"name{i}" for i in rng.integers(0, n // 2, n)],
            "CreditScore": rng.integers(350, 851, n),
            "Gender": rng.choice(["Female", "Male"], n),
            "Geography": rng.choice(["France", "Germany", "Spain"], n),
            "Tenure": rng.integers(0, 11, n),
            "Balance": np.round(rng.exponential(80_000, n), 2),
            "Exited": rng.choice([0, 1], n, p=[0.8, 0.2]),
        }
    )
    frame.loc[: blank_rows - 1, "Balance"] = np.nan
    return frame


def test_a_row_index_is_left_out_with_the_reason_and_never_sliced():
    for frame in (bank_table(), bank_table().astype(str)):  # typed and all text (CSV)
        text, spec = infer_spec_text(frame, target="Exited", id_column="CustomerId")
        assert "rownumber" not in spec.features
        assert "RowNumber: the consecutive whole numbers 1..600, one per row: a row index" in text
        assert "column: rownumber" not in text  # no slice proposed on it
        assert spec.features["creditscore"].kind == "integer"  # a real integer stays
    shuffled = bank_table().sample(frac=1.0, random_state=1)  # an index in any order
    text, spec = infer_spec_text(shuffled, target="Exited", id_column="CustomerId")
    assert "rownumber" not in spec.features
    # unique whole numbers named like an id (not the entity id) are left out too
    frame = bank_table().assign(AccountNo=lambda f: f["CustomerId"] * 7)
    text, spec = infer_spec_text(frame, target="Exited", id_column="CustomerId")
    assert "account_no" not in spec.features and "accountno" not in spec.features
    assert "named like an identifier" in text


def test_the_example_invariance_is_never_on_a_protected_attribute():
    text, spec = infer_spec_text(bank_table(), target="Exited", id_column="CustomerId")
    assert "feature: gender" not in text and "from: Female" not in text
    assert "#  - name: tenure_invariance" in text and "#    direction: decrease" in text
    # the proposal loads once uncommented
    block = text[text.index("#  - name: tenure_invariance") : text.index("invariances: []")]
    proposed = "\n".join(line.removeprefix("#") for line in block.splitlines())
    edited = text.replace("invariances: []", "invariances:\n" + proposed)
    assert [i.feature for i in parse_spec(edited).invariances] == ["tenure"]
    # no plausible cause by name: none proposed, said; still never gender or age
    plain = bank_table().drop(columns=["Tenure"]).assign(Age=lambda f: f["CreditScore"] % 60 + 18)
    text, _ = infer_spec_text(plain, target="Exited", id_column="CustomerId")
    assert "none proposed" in text
    assert "feature: gender" not in text and "feature: age" not in text


def test_the_null_rate_comment_says_the_rule_that_set_the_limit():
    # 1 blank in 600 rows: the +1 point floor sets the limit, not x1.5
    text, spec = infer_spec_text(bank_table(blank_rows=1), target="Exited", id_column="CustomerId")
    limit = spec.features["balance"].max_null_rate
    assert limit == 0.012
    line = next(x for x in text.splitlines() if "max_null_rate: 0.012" in x)
    assert "headroom x1.5" not in line and "headroom +1 point (7.2x the observed rate)" in line
    # 120 blanks in 600 rows: x1.5 sets it, and says so
    text, spec = infer_spec_text(
        bank_table(blank_rows=120), target="Exited", id_column="CustomerId"
    )
    assert spec.features["balance"].max_null_rate == 0.3
    assert "20.0% blank (120 of 600 rows), headroom x1.5" in text


def test_the_closing_hint_names_the_source_and_following_it_reads_the_data(
    tmp_path: Path, capsys, monkeypatch
):
    data, out = tmp_path / "bank.csv", tmp_path / "bank.yaml"
    bank_table().to_csv(data, index=False)
    assert (
        spec_cli("infer", str(data), "--target", "Exited", "--id", "CustomerId", "-o", str(out))
        == 0
    )
    said = capsys.readouterr().out
    run_line = next(x for x in said.splitlines() if "python -m churn_platform run" in x)
    assert f"CHURN_SOURCE=file CHURN_SOURCE_PATH={data} CHURN_SPEC={out}" in run_line
    assert f"source: {{kind: file, path: {data}}}" in said  # the platform-file form
    # the settings the hint names load the table through the spec (the pipeline's reader)
    for name, value in (("CHURN_SOURCE", "file"), ("CHURN_SOURCE_PATH", str(data))):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CHURN_SPEC", str(out))
    model = load_config().model(None)
    mapped, _ = platform_resources(load_config())["data_source"].snapshot(spec=model.spec)
    assert len(mapped.frame) == 600


def test_the_synthetic_source_says_it_is_not_your_table_in_one_short_line():
    _, spec = infer_spec_text(bank_table(), target="Exited", id_column="CustomerId")
    with pytest.raises(DataSourceError) as caught:
        SyntheticSourceResource(n_rows=200).snapshot(spec=spec)
    message = str(caught.value)
    assert "CHURN_SOURCE=file CHURN_SOURCE_PATH=" in message and "CHURN_SOURCE=synthetic" in message
    assert "'CustomerId'" in message and len(message) < 500, len(message)


def test_check_piped_into_a_reader_that_stops_exits_quietly(tmp_path: Path):
    data, out = tmp_path / "bank.csv", tmp_path / "bank.yaml"
    bank_table().to_csv(data, index=False)
    out.write_text(infer_spec_text(bank_table(), target="Exited", id_column="CustomerId")[0])
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write breaks the pipe
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "churn_platform",
                "spec",
                "check",
                str(data),
                "--spec",
                str(out),
            ],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert done.stderr == "" and done.returncode == 141, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("name", "protected"),
    [
        ("Gender", True),
        ("sex", True),
        ("Age", True),
        ("CustomerAge", True),
        ("SeniorCitizen", True),
        ("Race", True),
        ("Religion", True),
        ("usage_hours", False),
        ("trace_id", False),
        ("Tenure", False),
    ],
)
def test_protected_attribute_like_names(name: str, protected: bool):
    assert protected_like(name) is protected


def test_an_inactivity_feature_is_proposed_to_raise_churn():
    frame = (
        bank_table().drop(columns=["Tenure"]).assign(DaysInactive=lambda f: f["CreditScore"] % 90)
    )
    text, _ = infer_spec_text(frame, target="Exited", id_column="CustomerId")
    assert "#    feature: days_inactive" in text or "#    feature: daysinactive" in text
    assert "#    direction: increase" in text
