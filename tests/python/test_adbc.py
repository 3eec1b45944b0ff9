"""The Arrow project's ADBC Flight SQL driver (Go, via adbc_driver_flightsql.dbapi) against quiver.

Notes on how the driver behaves (read from adbc-driver-flightsql / adbc-driver-manager 1.13.0):
- username/password in db_kwargs -> a Basic-auth Handshake when each connection opens (so every
  connection gets its own token); the returned `authorization: Bearer ...` header is replayed
  on every later call. The Go client base64-encodes "user:password" WITHOUT padding
  (seen on the wire: "Basic YWxpY2U6bm90LWFsaWNlLXNlY3JldA"), unlike pyarrow.
- On open it also asks GetSqlInfo(FLIGHT_SQL_SERVER_TRANSACTION) and reads the value union's
  child 3 as int32: a non-standard SqlInfo union schema makes the driver panic.
- cursor.execute() always prepares first (CreatePreparedStatement action), then binds any
  parameters (DoPut on CommandPreparedStatementQuery) and runs it (GetFlightInfo + DoGet).
- conn.adbc_current_catalog / adbc_current_db_schema = X -> SetSessionOptions {"catalog": X} /
  {"schema": X}; reading them -> GetSessionOptions. Cookies are only sent back when the
  database option adbc.flight.sql.rpc.with_cookie_middleware=true.
- adbc_get_info() vendor fields come from GetSqlInfo (SERVER_NAME, SERVER_VERSION, ARROW_VERSION).
- adbc_get_objects() uses GetCatalogs/GetDbSchemas/GetTables(include_schema) and rejects any
  result whose Arrow schema differs from the Flight SQL reference schema.
- errors: gRPC status -> AdbcStatusCode (UNAUTHENTICATED, INVALID_ARGUMENT, NOT_FOUND, ...);
  message "<STATUS>: [FlightSQL] <server message> (<GrpcCode>; <context>)"; through the Python
  bindings vendor_code comes back as None.
"""

from __future__ import annotations

import uuid

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pytest

from adbc_driver_manager import AdbcStatusCode

pytestmark = pytest.mark.adbc

TPCH_TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]

LINEITEM_COLUMNS = [
    "l_orderkey", "l_partkey", "l_suppkey", "l_linenumber", "l_quantity", "l_extendedprice",
    "l_discount", "l_tax", "l_returnflag", "l_linestatus", "l_shipdate", "l_commitdate",
    "l_receiptdate", "l_shipinstruct", "l_shipmode", "l_comment",
]

# Row counts at scale factor 0.01 (fixed by the TPC-H spec; lineitem varies per order, 1..7).
TPCH_SF001_COUNTS = {
    "nation": 25, "region": 5, "part": 2000, "supplier": 100, "partsupp": 8000,
    "customer": 1500, "orders": 15000,
}

GRPC_UNAUTHENTICATED = 16

COOKIE_OPTION = adbc_driver_flightsql.DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value


def is_stringish(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def connect(gw, user=None, password=None, **extra):
    return gw.adbc(user, password, **extra)


@pytest.fixture
def conn(gateway, alice):
    c = connect(gateway, *alice)
    yield c
    c.close()


def scalar(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, f"{sql!r} should return one value, got {rows!r}"
    return rows[0][0]


def describe(err: BaseException) -> str:
    code = getattr(err, "status_code", None)
    vendor = getattr(err, "vendor_code", None)
    return f"{type(err).__name__}(status_code={code!r}, vendor_code={vendor!r}): {err}"


# --------------------------------------------------------------------------------------
# Authentication


def test_connect_with_password_and_query(conn):
    assert scalar(conn, "SELECT 1") == 1


def test_second_user_can_connect(gateway, bob):
    # "bob:bob-secret" is 14 bytes: its base64 needs padding, which the Go client leaves out.
    with connect(gateway, *bob) as c:
        assert scalar(c, "SELECT count(*) FROM nation") == 25


def test_wrong_password_is_unauthenticated(gateway):
    with pytest.raises(flight_sql.Error) as excinfo:
        c = connect(gateway, "alice", "not-alice-secret")
        try:
            c.cursor().execute("SELECT 1")
        finally:
            c.close()
    err = excinfo.value
    assert err.status_code == AdbcStatusCode.UNAUTHENTICATED, (
        f"a wrong password must be rejected as UNAUTHENTICATED, got {describe(err)}"
    )
    assert "unauthenticated" in str(err).lower(), describe(err)
    if err.vendor_code is not None:  # the driver reports the numeric gRPC code here
        assert err.vendor_code == GRPC_UNAUTHENTICATED, describe(err)
    assert "alice-secret" not in str(err), "error must not echo passwords"


def test_unknown_user_is_unauthenticated(gateway):
    with pytest.raises(flight_sql.Error) as excinfo:
        c = connect(gateway, "mallory", "alice-secret")
        try:
            c.cursor().execute("SELECT 1")
        finally:
            c.close()
    err = excinfo.value
    assert err.status_code == AdbcStatusCode.UNAUTHENTICATED, describe(err)


def test_no_credentials_is_rejected_by_password_gateway(gateway):
    c = connect(gateway)  # no Handshake happens without credentials
    try:
        with pytest.raises(flight_sql.Error) as excinfo:
            with c.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
    finally:
        c.close()
    err = excinfo.value
    assert err.status_code == AdbcStatusCode.UNAUTHENTICATED, (
        f"a call without a bearer token must be UNAUTHENTICATED, got {describe(err)}"
    )


# --------------------------------------------------------------------------------------
# Metadata


def test_get_info_reports_vendor(conn):
    info = conn.adbc_get_info()
    vendor = info.get("vendor_name")
    assert isinstance(vendor, str) and "quiver" in vendor.lower(), (
        f"vendor_name should come from GetSqlInfo SERVER_NAME (mentioning quiver); got {info!r}"
    )
    arrow_version = info.get("vendor_arrow_version")
    assert isinstance(arrow_version, str) and arrow_version[:1].isdigit(), (
        f"vendor_arrow_version should come from GetSqlInfo ARROW_VERSION; got {info!r}"
    )
    assert info.get("vendor_version"), f"vendor_version missing from {info!r}"
    assert info.get("driver_name"), f"driver fields missing from {info!r}"


def _objects(conn, **filters):
    return conn.adbc_get_objects(depth="all", **filters).read_all().to_pylist()


def _find(items, key, value):
    for item in items or []:
        if item[key] == value:
            return item
    return None


def test_get_objects_shows_tpch_tables_and_columns(conn):
    catalogs = _objects(conn)
    names = [c["catalog_name"] for c in catalogs]
    assert "tpch" in names and "memory" in names, f"catalogs: {names}"

    tpch = _find(catalogs, "catalog_name", "tpch")
    schema_names = [s["db_schema_name"] for s in tpch["catalog_db_schemas"]]
    assert "tiny" in schema_names, f"tpch schemas: {schema_names}"
    tiny = _find(tpch["catalog_db_schemas"], "db_schema_name", "tiny")
    table_names = [t["table_name"] for t in tiny["db_schema_tables"]]
    missing = sorted(set(TPCH_TABLES) - set(table_names))
    assert not missing, f"tpch.tiny lacks {missing}; has {table_names}"

    lineitem = _find(tiny["db_schema_tables"], "table_name", "lineitem")
    assert lineitem["table_type"], f"lineitem has no table_type: {lineitem!r}"
    columns = sorted(lineitem["table_columns"] or [], key=lambda c: c["ordinal_position"])
    col_names = [c["column_name"] for c in columns]
    assert col_names == LINEITEM_COLUMNS, f"lineitem columns in ordinal order: {col_names}"
    assert [c["ordinal_position"] for c in columns] == list(range(1, len(LINEITEM_COLUMNS) + 1)), (
        "ordinal_position must be 1-based and dense"
    )

    memory = _find(catalogs, "catalog_name", "memory")
    memory_schemas = [s["db_schema_name"] for s in memory["catalog_db_schemas"]]
    assert "default" in memory_schemas, f"memory schemas: {memory_schemas}"


def test_get_objects_filters(conn):
    catalogs = _objects(conn, catalog_filter="tpch", db_schema_filter="tiny", table_name_filter="line%")
    assert [c["catalog_name"] for c in catalogs] == ["tpch"], catalogs
    schemas = catalogs[0]["catalog_db_schemas"]
    assert [s["db_schema_name"] for s in schemas] == ["tiny"], schemas
    tables = [t["table_name"] for t in schemas[0]["db_schema_tables"]]
    assert tables == ["lineitem"], f"table filter 'line%' should match only lineitem, got {tables}"

    cols = _objects(conn, catalog_filter="tpch", db_schema_filter="tiny", table_name_filter="nation",
                    column_name_filter="n_name")
    table = cols[0]["catalog_db_schemas"][0]["db_schema_tables"][0]
    assert [c["column_name"] for c in table["table_columns"]] == ["n_name"], table


def test_get_table_schema(conn):
    schema = conn.adbc_get_table_schema("nation", catalog_filter="tpch", db_schema_filter="tiny")
    assert schema.names == ["n_nationkey", "n_name", "n_regionkey", "n_comment"], schema
    assert schema.field("n_nationkey").type == pa.int64(), schema
    assert is_stringish(schema.field("n_name").type), schema


def test_get_table_types(conn):
    types = conn.adbc_get_table_types()
    assert types and all(isinstance(t, str) and t for t in types), f"table types: {types!r}"


# --------------------------------------------------------------------------------------
# Queries


@pytest.mark.parametrize("table", TPCH_TABLES)
def test_tpch_table_counts(conn, table):
    n = scalar(conn, f"SELECT count(*) FROM {table}")
    if table in TPCH_SF001_COUNTS:
        assert n == TPCH_SF001_COUNTS[table], f"{table} at SF 0.01 should have {TPCH_SF001_COUNTS[table]} rows, got {n}"
    else:  # lineitem: 1..7 lines per order
        assert 15000 <= n <= 7 * 15000, f"lineitem count {n} is impossible at SF 0.01"


def test_fully_qualified_names(conn):
    assert scalar(conn, "SELECT count(*) FROM tpch.tiny.region") == 5


def test_prepared_statement_with_positional_parameter(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT n_name FROM nation WHERE n_nationkey = ?", (7,))
        assert cur.fetchall() == [("GERMANY",)]
        # same statement, new binding (reuses the prepared statement)
        cur.execute("SELECT n_name FROM nation WHERE n_nationkey = ?", (8,))
        assert cur.fetchall() == [("INDIA",)]


def test_prepared_statement_with_dollar_parameter_and_string(conn):
    assert scalar(conn, "SELECT n_name FROM nation WHERE n_nationkey = $1", (6,)) == "FRANCE"
    assert scalar(conn, "SELECT n_nationkey FROM nation WHERE n_name = ?", ("BRAZIL",)) == 2


def test_prepared_statement_with_two_parameters(conn):
    n = scalar(conn, "SELECT count(*) FROM nation WHERE n_regionkey = ? AND n_nationkey > ?", (1, 2))
    # region 1 (AMERICA): ARGENTINA(1), BRAZIL(2), CANADA(3), PERU(17), UNITED STATES(24)
    assert n == 3, f"expected 3 American nations with key > 2, got {n}"


def test_fetch_arrow_table_schema(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT n_nationkey, n_name, n_regionkey FROM nation ORDER BY n_nationkey")
        table = cur.fetch_arrow_table()
    assert isinstance(table, pa.Table), type(table)
    assert table.num_rows == 25, table.num_rows
    assert table.schema.names == ["n_nationkey", "n_name", "n_regionkey"], table.schema
    assert table.schema.field("n_nationkey").type == pa.int64(), table.schema
    assert is_stringish(table.schema.field("n_name").type), table.schema
    assert table.column("n_name").to_pylist()[:3] == ["ALGERIA", "ARGENTINA", "BRAZIL"]


def test_fetch_arrow_table_decimal_date_types(conn):
    with conn.cursor() as cur:
        cur.execute(
            "SELECT l_orderkey, l_extendedprice, l_shipdate, l_shipmode, count(*) OVER () AS total "
            "FROM lineitem ORDER BY l_orderkey, l_linenumber LIMIT 5"
        )
        table = cur.fetch_arrow_table()
    assert table.num_rows == 5
    s = table.schema
    assert s.field("l_orderkey").type == pa.int64(), s
    assert s.field("l_extendedprice").type == pa.decimal128(15, 2), s
    assert s.field("l_shipdate").type == pa.date32(), s
    assert is_stringish(s.field("l_shipmode").type), s
    assert s.field("total").type == pa.int64(), s


def test_empty_result_keeps_schema(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT n_nationkey, n_name FROM nation WHERE n_nationkey < 0")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 0
    assert table.schema.names == ["n_nationkey", "n_name"], table.schema


def test_dbapi_description(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT n_nationkey AS k, n_name AS name FROM nation LIMIT 1")
        assert [d[0] for d in cur.description] == ["k", "name"], cur.description
        assert len(cur.fetchall()) == 1


# --------------------------------------------------------------------------------------
# DDL / DML in the memory catalog


def test_ddl_dml_roundtrip_in_memory_catalog(conn):
    t = f"memory.default.t_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} AS VALUES (1, 'a'), (2, 'b')")
        cur.fetchall()
        cur.execute(f"INSERT INTO {t} VALUES (3, 'c')")
        cur.fetchall()
        cur.execute(f"SELECT column1, column2 FROM {t} ORDER BY column1")
        assert cur.fetchall() == [(1, "a"), (2, "b"), (3, "c")]
        cur.execute(f"DROP TABLE {t}")
        cur.fetchall()
    with pytest.raises(flight_sql.Error) as excinfo:
        scalar(conn, f"SELECT count(*) FROM {t}")
    assert t.rsplit(".", 1)[1] in str(excinfo.value), f"dropped table not named: {describe(excinfo.value)}"


def test_created_table_visible_to_other_connections(gateway, conn, bob):
    name = f"shared_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE memory.default.{name} (id BIGINT, label VARCHAR)")
        cur.fetchall()
        cur.execute(f"INSERT INTO memory.default.{name} VALUES (10, 'ten'), (20, 'twenty')")
        cur.fetchall()
    with connect(gateway, *bob) as other:
        assert scalar(other, f"SELECT sum(id) FROM memory.default.{name}") == 30
        objs = _objects(other, catalog_filter="memory", table_name_filter=name)
        tables = [t["table_name"] for s in objs[0]["catalog_db_schemas"] for t in s["db_schema_tables"] or []]
        assert tables == [name], f"new table not in GetTables: {objs!r}"


def test_statement_update_without_prepare(conn):
    # executescript() skips Prepare: the driver sends CommandStatementUpdate via DoPut.
    t = f"memory.default.upd_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cur:
        cur.executescript(f"CREATE TABLE {t} AS VALUES (1), (2)")
        cur.executescript(f"INSERT INTO {t} VALUES (3), (4), (5)")
        cur.execute(f"SELECT count(*), sum(column1) FROM {t}")
        assert cur.fetchall() == [(5, 15)]


def test_prepared_insert_with_executemany(conn):
    t = f"memory.default.ins_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id BIGINT, label VARCHAR)")
        cur.fetchall()
        cur.executemany(f"INSERT INTO {t} VALUES (?, ?)", [(1, "one"), (2, "two"), (3, "three")])
        cur.execute(f"SELECT id, label FROM {t} ORDER BY id")
        assert cur.fetchall() == [(1, "one"), (2, "two"), (3, "three")]


# --------------------------------------------------------------------------------------
# Errors


def test_bad_sql_is_invalid_argument_and_connection_survives(conn):
    with conn.cursor() as cur:
        with pytest.raises(flight_sql.Error) as excinfo:
            cur.execute("SELEC n_name FROM nation")
            cur.fetchall()
        err = excinfo.value
        assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT, (
            f"bad SQL should be INVALID_ARGUMENT, got {describe(err)}"
        )
        assert "SELEC" in str(err), f"message should point at the offending token: {err}"
        # the same cursor and connection keep working
        cur.execute("SELECT count(*) FROM region")
        assert cur.fetchall() == [(5,)]
    assert scalar(conn, "SELECT 2") == 2


def test_unknown_table_is_not_found_and_named(conn):
    with pytest.raises(flight_sql.Error) as excinfo:
        scalar(conn, "SELECT * FROM no_such_table_qv")
    err = excinfo.value
    assert "no_such_table_qv" in str(err), f"message should name the table: {err}"
    assert err.status_code == AdbcStatusCode.NOT_FOUND, f"unknown table should be NOT_FOUND, got {describe(err)}"
    assert scalar(conn, "SELECT 3") == 3


def test_unknown_column_names_the_column(conn):
    with pytest.raises(flight_sql.Error) as excinfo:
        scalar(conn, "SELECT no_such_column_qv FROM nation")
    assert "no_such_column_qv" in str(excinfo.value), describe(excinfo.value)


# --------------------------------------------------------------------------------------
# Session options: current catalog / schema


@pytest.mark.parametrize("cookies", [False, True], ids=["bearer-only", "with-cookies"])
def test_current_catalog_and_schema(gateway, alice, cookies):
    extra = {COOKIE_OPTION: "true"} if cookies else {}
    with connect(gateway, *alice, **extra) as c:
        assert c.adbc_current_catalog == "tpch", "default catalog from [session] config"
        assert c.adbc_current_db_schema == "tiny", "default schema from [session] config"

        c.adbc_current_catalog = "memory"
        c.adbc_current_db_schema = "default"
        assert c.adbc_current_catalog == "memory"
        assert c.adbc_current_db_schema == "default"

        name = f"sess_{uuid.uuid4().hex[:12]}"
        with c.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} AS VALUES (42)")
            cur.fetchall()
            cur.execute(f"SELECT column1 FROM {name}")
            assert cur.fetchall() == [(42,)]
        # it really went to memory.default
        assert scalar(c, f"SELECT column1 FROM memory.default.{name}") == 42

        with pytest.raises(flight_sql.Error):
            scalar(c, "SELECT count(*) FROM nation")  # not in memory.default

        c.adbc_current_catalog = "tpch"
        c.adbc_current_db_schema = "tiny"
        assert scalar(c, "SELECT count(*) FROM nation") == 25


def test_session_options_are_per_connection(gateway, alice):
    with connect(gateway, *alice) as a, connect(gateway, *alice) as b:
        a.adbc_current_catalog = "memory"
        a.adbc_current_db_schema = "default"
        assert b.adbc_current_catalog == "tpch", "another connection of the same user must keep its own session"
        assert scalar(b, "SELECT count(*) FROM nation") == 25

