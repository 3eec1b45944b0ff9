"""flightsql-dbapi through SQLAlchemy 1.4 — the way Apache Superset connects to Flight SQL.

Read from flightsql-dbapi 0.2.2 (flightsql/sqlalchemy.py, client.py, dbapi.py):
- URL: datafusion+flightsql://USER:PASSWORD@HOST:PORT?insecure=true  (dialect "datafusion",
  driver "flightsql"). Query params: insecure (any non-empty value -> plaintext grpc+tcp),
  disable_server_verification, token (bearer token instead of user/password),
  feature-<name>=on (e.g. feature-sqlalchemy-prepared-statements); every other param is sent
  as a gRPC header on each call.
- user/password -> pyarrow authenticate_basic_token() once, when the engine is created; the
  Bearer header is then sent on every call.
- On first connect the dialect calls GetSqlInfo for FLIGHT_SQL_SERVER_NAME (0),
  FLIGHT_SQL_SERVER_ARROW_VERSION (2), FLIGHT_SQL_SERVER_READ_ONLY (3) and
  SQL_IDENTIFIER_QUOTE_CHAR (504) and indexes all four (KeyError if one is missing).
- get_schema_names -> GetDbSchemas (no catalog filter): db_schema_name of every catalog.
- get_table_names(schema) -> GetTables(db_schema_filter_pattern=schema), all catalogs.
- get_columns(table, schema) -> GetTables(table_name_filter_pattern=table, include_schema=true),
  first row's IPC table_schema.
- Without feature-sqlalchemy-prepared-statements=on, bound values are rendered as literals.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import flightsql.flightsql_pb2 as pb
import flightsql.sqlalchemy  # noqa: F401  (registers the datafusion.flightsql dialect)


def engine_url(gw, user, password, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"insecure": "true", **params}.items())
    return f"datafusion+flightsql://{user}:{password}@127.0.0.1:{gw.flight_port}?{query}"


@pytest.fixture(scope="module")
def engine(gateway, alice):
    eng = sa.create_engine(engine_url(gateway, *alice))
    yield eng
    eng.dispose()


def test_dialect_initialises_from_sql_info(engine):
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    info = engine.dialect.sql_info
    for key in (pb.FLIGHT_SQL_SERVER_NAME, pb.FLIGHT_SQL_SERVER_ARROW_VERSION,
                pb.FLIGHT_SQL_SERVER_READ_ONLY, pb.SQL_IDENTIFIER_QUOTE_CHAR):
        assert key in info, f"GetSqlInfo id {key} missing: {info!r}"
    assert engine.dialect.identifier_preparer.initial_quote == '"', info


def test_schema_names(engine):
    names = sa.inspect(engine).get_schema_names()
    assert "tiny" in names, f"schemas: {names}"
    assert "default" in names, f"memory catalog's schema missing: {names}"


def test_table_names(engine):
    names = sa.inspect(engine).get_table_names(schema="tiny")
    for t in ("nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"):
        assert t in names, f"{t} missing from {names}"


@pytest.mark.parametrize("schema", [None, "tiny"])
def test_columns(engine, schema):
    cols = sa.inspect(engine).get_columns("lineitem", schema=schema)
    names = [c["name"] for c in cols]
    assert names[:3] == ["l_orderkey", "l_partkey", "l_suppkey"], names
    assert len(names) == 16, names
    by_name = {c["name"]: c for c in cols}
    assert by_name["l_orderkey"]["type"] is sa.types.BIGINT or isinstance(by_name["l_orderkey"]["type"], sa.types.BIGINT), by_name["l_orderkey"]
    assert by_name["l_shipdate"]["type"] in (sa.types.DATE,) or isinstance(by_name["l_shipdate"]["type"], sa.types.DATE), by_name["l_shipdate"]
    assert by_name["l_extendedprice"]["type"] in (sa.types.DECIMAL,) or isinstance(by_name["l_extendedprice"]["type"], sa.types.DECIMAL), by_name["l_extendedprice"]


def test_count_nation(engine):
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM nation")).scalar() == 25


def test_core_select_with_bound_value(engine):
    nation = sa.table("nation", sa.column("n_nationkey"), sa.column("n_name"))
    stmt = sa.select(nation.c.n_name).where(nation.c.n_nationkey == 7)
    with engine.connect() as conn:
        rows = conn.execute(stmt).fetchall()
    assert [tuple(r) for r in rows] == [("GERMANY",)], rows


def test_superset_style_query(engine):
    # The shape of query Superset generates for a chart: aliased aggregate, GROUP BY, ORDER BY, LIMIT.
    sql = (
        'SELECT r_name AS "region", count(*) AS "count" '
        "FROM nation JOIN region ON n_regionkey = r_regionkey "
        "GROUP BY r_name ORDER BY \"count\" DESC, r_name LIMIT 10"
    )
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql))
        assert list(result.keys()) == ["region", "count"]
        rows = [tuple(r) for r in result.fetchall()]
    assert len(rows) == 5 and all(c == 5 for _, c in rows), rows
    assert rows[0][0] == "AFRICA", rows


def test_wrong_password_rejected(gateway):
    with pytest.raises(Exception) as excinfo:
        eng = sa.create_engine(engine_url(gateway, "alice", "wrong-password"))
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    assert "unauthenticated" in str(excinfo.value).lower(), f"{type(excinfo.value).__name__}: {excinfo.value}"
