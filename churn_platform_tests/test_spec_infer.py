"""``python -m churn_platform spec infer`` and ``spec check``: a starter spec a person edits,
inferred from the rows as the pipeline's data source reads them, and a check that names
the key, line or column to fix."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from churn_platform import cli
from churn_platform.core.spec import default_spec, load_spec, parse_spec
from churn_platform.core.spec_infer import InferOptions, widen
from churn_platform.core.spec_starter import infer_spec_text
from churn_platform.core.synthetic import SyntheticSpec, generate
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
    frame = pd.DataFrame({"id": [f"c{i}" for i in range(300)], "x": range(300)})
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
