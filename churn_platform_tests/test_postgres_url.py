"""Issue 14.7: the README's ``postgresql://`` source URL works (SQLAlchemy 2.1 resolves it to
psycopg 3, which the package now depends on), against a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from churn_platform.resources.data_source import SqlSource
from churn_platform_tests.postgres import PostgresServer, postgres_bin_dir, running_postgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed")
    with running_postgres() as server:
        yield server


def test_plain_postgresql_url_reads_a_table(postgres: PostgresServer) -> None:
    url = sa.engine.make_url(postgres.url).set(drivername="postgresql")
    plain = url.render_as_string(hide_password=False)
    assert plain.startswith("postgresql://")
    assert url.get_dialect().driver == "psycopg"  # what postgresql:// means in SQLAlchemy 2.1
    engine = sa.create_engine(plain)
    try:
        pd.DataFrame({"customer_id": ["a", "b"], "tenure_months": [3, 5]}).to_sql(
            "customers_plain", engine, index=False, if_exists="replace"
        )
    finally:
        engine.dispose()
    snapshot = SqlSource(plain, table="customers_plain").load()
    assert list(snapshot.frame["tenure_months"]) == [3, 5]
