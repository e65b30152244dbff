"""Data sources against real files, a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from churn_platform.core import schema as s
from churn_platform.core.contract import evaluate_contract
from churn_platform.core.mapping import ColumnMapping, DataSourceError
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources.data_source import (
    FileSource,
    FileSourceResource,
    SqlSource,
    SqlSourceResource,
    SyntheticSource,
    SyntheticSourceResource,
    load_snapshot,
)
from churn_platform_tests.postgres import PostgresServer, postgres_bin_dir, running_postgres

TELCO_COLUMNS = {"CustomerID": s.CUSTOMER_ID, "Contract": s.CONTRACT_TYPE, "Churn": s.TARGET}
TELCO_VALUES = {
    s.CONTRACT_TYPE: {"Month-to-month": "monthly", "One year": "annual", "Two year": "multi-year"},
    s.TARGET: {"Yes": "1", "No": "0"},
}
SPEC = default_spec()
TELCO = ColumnMapping(columns=TELCO_COLUMNS, values=TELCO_VALUES, spec=SPEC)


def canonical(n: int = 300) -> pd.DataFrame:
    return generate(SyntheticSpec(n_rows=n, seed=21))


def telco(n: int = 300) -> pd.DataFrame:
    """Canonical rows in a user's shape: other names, labels, text ids with leading zeros."""
    frame = canonical(n)
    frame[s.CUSTOMER_ID] = [f"{i:06d}" for i in range(n)]
    frame[s.CONTRACT_TYPE] = frame[s.CONTRACT_TYPE].map(
        {v: k for k, v in TELCO_VALUES[s.CONTRACT_TYPE].items()}
    )
    frame[s.TARGET] = frame[s.TARGET].map({1: "Yes", 0: "No"})
    return frame.rename(columns={v: k for k, v in TELCO_COLUMNS.items()})


def assert_canonical_rows(frame: pd.DataFrame, n: int = 300) -> None:
    expected = canonical(n)
    assert {c: str(t) for c, t in frame.dtypes.items()} == s.CANONICAL_DTYPES
    assert frame[s.CUSTOMER_ID].tolist()[:3] == ["000000", "000001", "000002"]
    for col in (s.TENURE_MONTHS, s.SUPPORT_TICKETS, s.TARGET, s.CONTRACT_TYPE, s.REGION):
        assert frame[col].tolist() == expected[col].tolist(), col
    assert frame[s.MONTHLY_SPEND].round(2).tolist() == expected[s.MONTHLY_SPEND].tolist()
    assert frame[s.SIGNUP_DATE].tolist() == expected[s.SIGNUP_DATE].tolist()


# --- files -----------------------------------------------------------------------------


def test_csv_file_loads_as_text_and_maps_onto_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    telco().to_csv(path, index=False)
    raw = FileSource(path).load()
    assert raw.frame["CustomerID"].tolist()[:2] == ["000000", "000001"]  # text, zeros kept
    assert raw.description["kind"] == "file" and raw.description["location"] == str(path)
    assert raw.description["rows"] == 300 and raw.description["format"] == "csv"
    mapped, description = load_snapshot(FileSource(path), TELCO, spec=SPEC)
    assert_canonical_rows(mapped.frame)
    assert not [r.name for r in evaluate_contract(mapped, spec=SPEC) if not r.passed]
    assert description["bytes"] == path.stat().st_size


def test_csv_blanks_become_nulls_counted_by_the_mapping(tmp_path: Path) -> None:
    frame = telco(50)
    frame[s.TENURE_MONTHS] = frame[s.TENURE_MONTHS].astype(str)
    frame.loc[[2, 5], s.TENURE_MONTHS] = ""
    path = tmp_path / "blanks.csv"
    frame.to_csv(path, index=False)
    mapped, _ = load_snapshot(FileSource(path), TELCO, spec=SPEC)
    assert mapped.conversion_report[s.TENURE_MONTHS].blanks == 2
    assert mapped.frame[s.TENURE_MONTHS].isna().tolist()[:6] == [False, False, True] + [
        False,
        False,
        True,
    ]


def test_parquet_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "customers.parquet"
    telco().to_parquet(path, index=False)
    mapped, description = load_snapshot(FileSource(str(path)), TELCO, spec=SPEC)
    assert description["format"] == "parquet"
    assert_canonical_rows(mapped.frame)


def test_folder_picks_the_newest_data_file(tmp_path: Path) -> None:
    old, new, tie = tmp_path / "a_old.csv", tmp_path / "b_new.parquet", tmp_path / "a_tie.csv"
    telco(10).to_csv(old, index=False)
    telco(20).to_parquet(new, index=False)
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / ".hidden.csv").write_text("x\n1\n")
    os.utime(old, (1_700_000_000, 1_700_000_000))
    os.utime(new, (1_700_000_500, 1_700_000_500))
    os.utime(tmp_path / ".hidden.csv", (1_800_000_000, 1_800_000_000))
    raw = FileSource(tmp_path).load()
    assert raw.description["location"] == str(new) and raw.description["rows"] == 20
    assert raw.description["folder"] == str(tmp_path)
    telco(30).to_csv(tie, index=False)
    os.utime(tie, (1_700_000_500, 1_700_000_500))  # same mtime: the later name wins
    assert FileSource(tmp_path).resolve() == new
    os.utime(tie, (1_700_000_600, 1_700_000_600))
    assert FileSource(tmp_path).load().description["rows"] == 30


def test_folder_without_data_files_says_so(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(DataSourceError, match=r"holds no .*readme\.md"):
        FileSource(tmp_path).load()


def test_empty_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataSourceError, match=rf"{empty} is empty \(0 bytes\)"):
        FileSource(empty).load()
    header_only = tmp_path / "header.csv"
    header_only.write_text("CustomerID,Contract\n")
    with pytest.raises(DataSourceError, match=rf"{header_only} has no data rows.*CustomerID"):
        FileSource(header_only).load()
    no_rows = tmp_path / "empty.parquet"
    telco(5).iloc[0:0].to_parquet(no_rows)
    with pytest.raises(DataSourceError, match=rf"{no_rows} has no data rows"):
        FileSource(no_rows).load()


def test_unreadable_files_are_refused_with_the_fix(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not really parquet" * 10)
    with pytest.raises(DataSourceError, match=rf"{corrupt} is not a readable Parquet file"):
        FileSource(corrupt).load()
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataSourceError, match=rf"{binary} looks binary"):
        FileSource(binary).load()
    latin = tmp_path / "latin.csv"
    latin.write_bytes("CustomerID,Region\n1,Zürich\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match=r"not valid utf-8 text.*read_options encoding"):
        FileSource(latin).load()
    frame = FileSource(latin, {"encoding": "latin-1"}).load().frame
    assert frame["Region"].tolist() == ["Zürich"]


def _load_as_unprivileged_user(path: Path) -> str:
    """``FileSource(path).load()`` where file permissions apply; the error text or "loaded".

    Root reads anything, so under root a forked child drops to the ``nobody`` user
    first (a subprocess cannot: the interpreter may live where ``nobody`` cannot go).
    """

    def attempt() -> str:
        try:
            FileSource(path).load()
        except DataSourceError as exc:
            return f"DataSourceError: {exc}"
        except BaseException as exc:  # anything else is a bug the test must show
            return f"{type(exc).__name__}: {exc}"
        return "loaded"

    if os.geteuid() != 0:
        return attempt()
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root without a 'nobody' user to test file permissions")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, try, report, exit without pytest's cleanup
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.write(write_end, attempt().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        message = reader.read().decode()
    os.waitpid(pid, 0)
    return message


def test_file_without_read_permission_is_refused() -> None:
    folder = Path(tempfile.mkdtemp(prefix="churn-perm-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        path = folder / "locked.csv"
        telco(5).to_csv(path, index=False)
        path.chmod(0)
        message = _load_as_unprivileged_user(path)
        assert message.startswith(f"DataSourceError: {path} cannot be read: permission denied")
        folder.chmod(0o700)  # now the folder itself cannot be entered
        message = _load_as_unprivileged_user(path)
        assert message.startswith("DataSourceError: ") and "permission denied" in message
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_missing_path_and_unsupported_extension_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataSourceError, match=rf"{missing} does not exist \(folder .* exists\)"):
        FileSource(missing).load()
    excel = tmp_path / "customers.xlsx"
    excel.write_bytes(b"zip")
    with pytest.raises(DataSourceError, match=r"unsupported extension '\.xlsx'"):
        FileSource(excel).load()


def test_separator_is_configurable_and_a_wrong_one_is_diagnosed(tmp_path: Path) -> None:
    path = tmp_path / "semicolon.csv"
    telco(10).to_csv(path, index=False, sep=";")
    with pytest.raises(DataSourceError, match=r"set read_options sep to ';'"):
        FileSource(path).load()
    mapped, _ = load_snapshot(FileSource(path, {"sep": ";"}), TELCO, spec=SPEC)
    assert len(mapped.frame) == 10
    with pytest.raises(DataSourceError, match=r"unknown key\(s\) \['delimiter'\]"):
        FileSource(path, {"delimiter": ";"})


def test_mapping_errors_carry_the_file_location(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    telco(10).to_csv(path, index=False)
    with pytest.raises(DataSourceError, match=rf"{path}: required canonical column.*'churned'"):
        load_snapshot(FileSource(path), {"columns": {"CustomerID": "customer_id"}}, spec=SPEC)


# --- SQL -------------------------------------------------------------------------------


def write_table(url: str, frame: pd.DataFrame, table: str) -> None:
    engine = sa.create_engine(url)
    try:
        frame.to_sql(table, engine, index=False, if_exists="replace")
    finally:
        engine.dispose()


def test_sqlite_table_and_query(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    write_table(url, telco(), "customers")
    mapped, description = load_snapshot(SqlSource(url, table="customers"), TELCO, spec=SPEC)
    assert_canonical_rows(mapped.frame)
    assert description["kind"] == "sql" and description["table"] == "customers"
    query = "SELECT * FROM customers WHERE \"Contract\" = 'One year'"
    by_query, _ = load_snapshot(SqlSource(url, query=query), TELCO, spec=SPEC)
    assert len(by_query.frame) == (canonical()[s.CONTRACT_TYPE] == "annual").sum() > 0
    assert set(by_query.frame[s.CONTRACT_TYPE]) == {"annual"}


def test_sqlite_errors_name_the_table_file_or_query(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    write_table(url, telco(5), "customers")
    write_table(url, telco(5).iloc[0:0], "empty")
    with pytest.raises(
        DataSourceError, match=r"table 'custmers' not found.*\['customers', 'empty'\]"
    ):
        SqlSource(url, table="custmers").load()
    with pytest.raises(DataSourceError, match="table empty at .* returned no rows"):
        SqlSource(url, table="empty").load()
    with pytest.raises(DataSourceError, match=r"query failed .*no such table: nope.*fix the query"):
        SqlSource(url, query="SELECT * FROM nope").load()
    missing = tmp_path / "missing.db"
    with pytest.raises(DataSourceError, match=rf"SQLite database file {missing} does not exist"):
        SqlSource(f"sqlite:///{missing}", table="customers").load()
    assert not missing.exists()  # connecting would have created it
    with pytest.raises(DataSourceError, match="set exactly one of table or query"):
        SqlSource(url, table="customers", query="SELECT 1")
    with pytest.raises(DataSourceError, match="not a valid SQLAlchemy URL"):
        SqlSource("not a url", table="customers").load()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed")
    with running_postgres() as server:
        yield server


@pytest.mark.integration
def test_postgres_table_query_and_missing_table(postgres: PostgresServer) -> None:
    write_table(postgres.url, telco(), "customers")
    mapped, description = load_snapshot(
        SqlSource(postgres.url, table="customers"), TELCO, spec=SPEC
    )
    assert_canonical_rows(mapped.frame)
    assert description["url"] == postgres.url
    by_query, _ = load_snapshot(
        SqlSource(postgres.url, query="SELECT * FROM customers WHERE support_tickets = 0"),
        TELCO,
        spec=SPEC,
    )
    assert len(by_query.frame) == (canonical()[s.SUPPORT_TICKETS] == 0).sum() > 0
    with pytest.raises(DataSourceError, match=r"table 'customer' not found .*\['customers'\]"):
        SqlSource(postgres.url, table="customer").load()
    with pytest.raises(DataSourceError, match=r'query failed .*"custmers" does not exist'):
        SqlSource(postgres.url, query="SELECT * FROM custmers").load()


@pytest.mark.integration
def test_postgres_schema_qualified_table(postgres: PostgresServer) -> None:
    engine = sa.create_engine(postgres.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS crm"))
        telco(40).to_sql("customers", engine, schema="crm", index=False, if_exists="replace")
    finally:
        engine.dispose()
    mapped, _ = load_snapshot(
        SqlSource(postgres.url, table="customers", schema="crm"), TELCO, spec=SPEC
    )
    assert len(mapped.frame) == 40


@pytest.mark.integration
def test_postgres_connection_failure_names_the_url_without_password(
    postgres: PostgresServer,
) -> None:
    from churn_platform_tests.postgres import free_port

    url = f"postgresql+psycopg2://churn:s3cret@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(DataSourceError) as info:
        SqlSource(url, table="customers").load()
    message = str(info.value)
    assert "cannot connect to postgresql+psycopg2://churn:***@127.0.0.1" in message
    assert "s3cret" not in message and "server is running" in message
    bad_db = postgres.url.rsplit("/", 1)[0] + "/nodb"
    with pytest.raises(DataSourceError, match=r'cannot connect .*database "nodb" does not exist'):
        SqlSource(bad_db, table="customers").load()


# --- synthetic and the Dagster resources -----------------------------------------------


def test_synthetic_source_with_defects_fails_the_contract() -> None:
    source = SyntheticSource(n_rows=500, seed=3, duplicate_ids=2, out_of_range={s.TENURE_MONTHS: 1})
    mapped, description = load_snapshot(source, spec=SPEC)
    assert description["kind"] == "synthetic" and description["spec"]["duplicate_ids"] == 2
    failed = {r.name for r in evaluate_contract(mapped, spec=SPEC) if not r.passed}
    assert failed == {"customer_id_unique", "tenure_months_in_range"}
    with pytest.raises(DataSourceError, match="synthetic source config: null_rate names unknown"):
        SyntheticSource(null_rate={"age": 0.1}).load()


def test_resources_build_sources_and_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    telco().to_csv(path, index=False)
    resource = FileSourceResource(path=str(tmp_path), columns=TELCO_COLUMNS, values=TELCO_VALUES)
    mapped, description = resource.snapshot(SPEC)
    assert_canonical_rows(mapped.frame)
    assert description["location"] == str(path)
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    write_table(url, telco(), "customers")
    sql = SqlSourceResource(url=url, table="customers", columns=TELCO_COLUMNS, values=TELCO_VALUES)
    assert_canonical_rows(sql.snapshot(SPEC)[0].frame)
    synthetic = SyntheticSourceResource(n_rows=200, contract_mix=[1.0, 0.0, 0.0])
    assert set(synthetic.snapshot(SPEC)[0].frame[s.CONTRACT_TYPE]) == {"monthly"}


def test_resource_config_with_nested_value_maps_runs_in_dagster(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    telco(50).to_csv(path, index=False)

    @dg.asset
    def snapshot_rows(source: FileSourceResource) -> int:
        mapped, _ = source.snapshot(SPEC)
        return int(mapped.frame[s.TARGET].sum())

    result = dg.materialize(
        [snapshot_rows],
        resources={"source": FileSourceResource.configure_at_launch()},
        run_config={
            "resources": {
                "source": {
                    "config": {"path": str(path), "columns": TELCO_COLUMNS, "values": TELCO_VALUES}
                }
            }
        },
    )
    assert result.success
    assert result.output_for_node("snapshot_rows") == int(canonical(50)[s.TARGET].sum())
