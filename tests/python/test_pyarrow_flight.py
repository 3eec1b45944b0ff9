"""Raw Flight RPCs with pyarrow.flight against quiver.

pyarrow has no Flight SQL client, so the Flight SQL commands (protobuf messages wrapped in
google.protobuf.Any) are encoded by hand below. The encoder is checked against the generated
protobuf classes shipped by flightsql-dbapi, which do not need a running gateway.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

RPC_TIMEOUT_S = 120.0
NO_AUTH = flight.FlightCallOptions(timeout=RPC_TIMEOUT_S)

SQL_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."

# SqlInfo ids (FlightSql.proto)
FLIGHT_SQL_SERVER_NAME = 0
FLIGHT_SQL_SERVER_VERSION = 1
FLIGHT_SQL_SERVER_ARROW_VERSION = 2
FLIGHT_SQL_SERVER_READ_ONLY = 3
SQL_IDENTIFIER_QUOTE_CHAR = 504


# --------------------------------------------------------------------------------------
# A tiny protobuf encoder (varint, length-delimited, packed) — enough for Flight SQL commands.


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def pb_bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def pb_string(field: int, value: str) -> bytes:
    return pb_bytes(field, value.encode("utf-8"))


def pb_bool(field: int, value: bool) -> bytes:
    return _key(field, 0) + _varint(1 if value else 0)


def pb_packed_uint32(field: int, values) -> bytes:
    if not values:
        return b""
    return pb_bytes(field, b"".join(_varint(v) for v in values))


def pb_any(message_name: str, payload: bytes) -> bytes:
    """google.protobuf.Any{type_url = 1, value = 2} (proto3: an empty value is omitted)."""
    return pb_string(1, SQL_PREFIX + message_name) + (pb_bytes(2, payload) if payload else b"")


def cmd_statement_query(query: str) -> bytes:
    return pb_any("CommandStatementQuery", pb_string(1, query))


def cmd_get_sql_info(ids=()) -> bytes:
    return pb_any("CommandGetSqlInfo", pb_packed_uint32(1, list(ids)))


def cmd_get_catalogs() -> bytes:
    return pb_any("CommandGetCatalogs", b"")


def cmd_get_db_schemas(catalog=None, schema_pattern=None) -> bytes:
    body = b""
    if catalog is not None:
        body += pb_string(1, catalog)
    if schema_pattern is not None:
        body += pb_string(2, schema_pattern)
    return pb_any("CommandGetDbSchemas", body)


def cmd_get_tables(catalog=None, schema_pattern=None, table_pattern=None, table_types=(), include_schema=False) -> bytes:
    body = b""
    if catalog is not None:
        body += pb_string(1, catalog)
    if schema_pattern is not None:
        body += pb_string(2, schema_pattern)
    if table_pattern is not None:
        body += pb_string(3, table_pattern)
    for t in table_types:
        body += pb_string(4, t)
    if include_schema:
        body += pb_bool(5, True)
    return pb_any("CommandGetTables", body)


def cmd_get_table_types() -> bytes:
    return pb_any("CommandGetTableTypes", b"")


def test_encoder_matches_generated_protobuf():
    """Self-check of the hand-written encoder (no gateway needed)."""
    from google.protobuf import any_pb2

    import flightsql.flightsql_pb2 as pb

    def packed(msg) -> bytes:
        a = any_pb2.Any()
        a.Pack(msg)
        return a.SerializeToString()

    q = "SELECT 'é', 1 FROM t WHERE x = 'a long enough string to need a two-byte varint length " + "x" * 130 + "'"
    assert cmd_statement_query(q) == packed(pb.CommandStatementQuery(query=q))
    assert cmd_get_sql_info([0, 2, 3, 504]) == packed(pb.CommandGetSqlInfo(info=[0, 2, 3, 504]))
    assert cmd_get_sql_info() == packed(pb.CommandGetSqlInfo())
    assert cmd_get_catalogs() == packed(pb.CommandGetCatalogs())
    assert cmd_get_db_schemas("tpch", "ti%") == packed(pb.CommandGetDbSchemas(catalog="tpch", db_schema_filter_pattern="ti%"))
    assert cmd_get_tables("tpch", "tiny", "nat%", ["TABLE", "VIEW"], True) == packed(
        pb.CommandGetTables(
            catalog="tpch", db_schema_filter_pattern="tiny", table_name_filter_pattern="nat%",
            table_types=["TABLE", "VIEW"], include_schema=True,
        )
    )
    assert cmd_get_table_types() == packed(pb.CommandGetTableTypes())


# --------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def client(gateway):
    c = flight.FlightClient(gateway.flight_location)
    yield c
    c.close()


@pytest.fixture(scope="module")
def options(client, alice):
    header = client.authenticate_basic_token(*alice)
    return flight.FlightCallOptions(headers=[header], timeout=RPC_TIMEOUT_S)


def fetch(client, options, command: bytes):
    """GetFlightInfo + DoGet of every endpoint; checks the schema/endpoint invariants. -> (info, table)."""
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
    assert len(info.endpoints) >= 1, "a result must have at least one endpoint (clients read endpoints[0])"
    tables = []
    for i, ep in enumerate(info.endpoints):
        for loc in ep.locations:
            uri = loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri)
            assert "0.0.0.0" not in uri and "[::]" not in uri, f"endpoint {i} advertises an unroutable location {uri!r}"
        reader = client.do_get(ep.ticket, options)
        assert reader.schema.equals(info.schema, check_metadata=True), (
            f"endpoint {i}: DoGet schema differs from GetFlightInfo schema\n"
            f"FlightInfo: {info.schema}\n  metadata={info.schema.metadata}\n"
            f"DoGet:      {reader.schema}\n  metadata={reader.schema.metadata}"
        )
        tables.append(reader.read_all())
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    assert table.schema.equals(info.schema, check_metadata=True), "data schema differs from FlightInfo schema"
    if info.total_records >= 0:
        assert info.total_records == table.num_rows, (
            f"FlightInfo.total_records={info.total_records} but {table.num_rows} rows were streamed"
        )
    return info, table


def is_stringish(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


# --------------------------------------------------------------------------------------
# Authentication


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_basic_auth_returns_bearer_token(client, who, request):
    # pyarrow pads the base64 of "user:password" ("bob:bob-secret" needs "=="); the Go client
    # used by ADBC does not. The gateway must accept both.
    key, value = client.authenticate_basic_token(*request.getfixturevalue(who))
    assert key.lower() == b"authorization", key
    assert value.startswith(b"Bearer ") and len(value) > len(b"Bearer ") + 8, value


def test_wrong_password_unauthenticated(client):
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("alice", "wrong")


def test_call_without_token_unauthenticated(client):
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(flight.FlightDescriptor.for_command(cmd_statement_query("SELECT 1")), NO_AUTH)


def test_forged_token_unauthenticated(client):
    opts = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer not-a-real-token")], timeout=RPC_TIMEOUT_S)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(flight.FlightDescriptor.for_command(cmd_statement_query("SELECT 1")), opts)


def test_token_works_on_another_connection(gateway, options):
    other = flight.FlightClient(gateway.flight_location)
    try:
        _, table = fetch(other, options, cmd_statement_query("SELECT count(*) AS n FROM region"))
        assert table.column("n").to_pylist() == [5]
    finally:
        other.close()


# --------------------------------------------------------------------------------------
# Statements


QUERIES = {
    "nation": "SELECT n_nationkey, n_name FROM nation ORDER BY n_nationkey",
    "decimal_date_string": (
        "SELECT l_orderkey, l_extendedprice, l_discount, l_shipdate, l_shipmode, "
        "CAST(1.5 AS DECIMAL(10, 3)) AS d, DATE '2020-01-31' AS dt, 'x' AS s "
        "FROM lineitem ORDER BY l_orderkey, l_linenumber LIMIT 10"
    ),
    "empty": "SELECT n_nationkey, n_name FROM nation WHERE n_nationkey < 0",
    "aggregate": "SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey ORDER BY n_regionkey",
    "large": "SELECT l_orderkey, l_comment FROM lineitem",
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_statement_schema_consistency(client, options, name):
    info, table = fetch(client, options, cmd_statement_query(QUERIES[name]))
    if name == "nation":
        assert table.num_rows == 25
        assert table.column("n_name").to_pylist()[7] == "GERMANY"
    elif name == "decimal_date_string":
        s = info.schema
        assert table.num_rows == 10
        assert s.field("l_extendedprice").type == pa.decimal128(15, 2), s
        assert s.field("l_discount").type == pa.decimal128(15, 2), s
        assert s.field("l_shipdate").type == pa.date32(), s
        assert is_stringish(s.field("l_shipmode").type), s
        assert s.field("d").type == pa.decimal128(10, 3), s
        assert s.field("dt").type == pa.date32(), s
        assert is_stringish(s.field("s").type), s
        row = table.slice(0, 1).to_pylist()[0]
        assert str(row["d"]) == "1.500" and str(row["dt"]) == "2020-01-31", row
    elif name == "empty":
        assert table.num_rows == 0
        assert info.schema.names == ["n_nationkey", "n_name"], info.schema
    elif name == "aggregate":
        assert table.column("n").to_pylist() == [5, 5, 5, 5, 5], table
    elif name == "large":
        assert table.num_rows > 15000, table.num_rows


def test_garbage_ticket_is_invalid_argument(client, options):
    with pytest.raises((pa.ArrowInvalid, flight.FlightError)) as excinfo:
        client.do_get(flight.Ticket(b"\x00garbage-ticket\xff"), options).read_all()
    err = excinfo.value
    # pyarrow maps gRPC INVALID_ARGUMENT (and only that) to ArrowInvalid.
    assert isinstance(err, pa.ArrowInvalid), f"expected INVALID_ARGUMENT (ArrowInvalid), got {type(err).__name__}: {err}"
    # Undecodable bytes are refused by arrow-rs's Flight SQL dispatcher before the gateway sees
    # them ("DecodeError"); tickets that decode but were not issued here say "invalid ticket".
    assert "ticket" in str(err).lower() or "decodeerror" in str(err).lower(), f"message should say why: {err}"


def test_bad_sql_is_invalid_argument(client, options):
    with pytest.raises(pa.ArrowInvalid) as excinfo:
        client.get_flight_info(flight.FlightDescriptor.for_command(cmd_statement_query("SELEC 1")), options)
    assert "SELEC" in str(excinfo.value), str(excinfo.value)


def test_unknown_table_is_not_found(client, options):
    # pyarrow maps gRPC NOT_FOUND to ArrowKeyError
    with pytest.raises(pa.ArrowKeyError) as excinfo:
        client.get_flight_info(
            flight.FlightDescriptor.for_command(cmd_statement_query("SELECT * FROM no_such_table_pf")), options
        )
    assert "no_such_table_pf" in str(excinfo.value), str(excinfo.value)


def test_unknown_command_rejected(client, options):
    desc = flight.FlightDescriptor.for_command(pb_any("CommandNoSuchThing", b""))
    with pytest.raises((pa.ArrowInvalid, pa.ArrowNotImplementedError, flight.FlightError)):
        client.get_flight_info(desc, options)


# --------------------------------------------------------------------------------------
# SqlInfo and metadata commands (schemas must match the Flight SQL reference exactly:
# the ADBC driver rejects anything else).


def _sql_info(client, options, ids=()):
    _, table = fetch(client, options, cmd_get_sql_info(ids))
    assert table.schema.names == ["info_name", "value"], table.schema
    assert table.schema.field("info_name").type == pa.uint32(), table.schema
    assert pa.types.is_union(table.schema.field("value").type), table.schema
    assert table.schema.field("value").type.mode == "dense", table.schema
    return {row["info_name"]: row["value"] for row in table.to_pylist()}


def test_sql_info_values(client, options):
    ids = [FLIGHT_SQL_SERVER_NAME, FLIGHT_SQL_SERVER_VERSION, FLIGHT_SQL_SERVER_ARROW_VERSION,
           FLIGHT_SQL_SERVER_READ_ONLY, SQL_IDENTIFIER_QUOTE_CHAR]
    info = _sql_info(client, options, ids)
    missing = [i for i in ids if i not in info]
    assert not missing, f"GetSqlInfo lacks ids {missing}; got {info!r}"
    assert isinstance(info[FLIGHT_SQL_SERVER_NAME], str) and "quiver" in info[FLIGHT_SQL_SERVER_NAME].lower(), info
    assert isinstance(info[FLIGHT_SQL_SERVER_VERSION], str) and info[FLIGHT_SQL_SERVER_VERSION], info
    assert isinstance(info[FLIGHT_SQL_SERVER_ARROW_VERSION], str) and info[FLIGHT_SQL_SERVER_ARROW_VERSION][:1].isdigit(), info
    assert isinstance(info[FLIGHT_SQL_SERVER_READ_ONLY], bool), info
    assert info[SQL_IDENTIFIER_QUOTE_CHAR] == '"', info


def test_sql_info_all(client, options):
    info = _sql_info(client, options)
    for i in (FLIGHT_SQL_SERVER_NAME, FLIGHT_SQL_SERVER_ARROW_VERSION, FLIGHT_SQL_SERVER_READ_ONLY, SQL_IDENTIFIER_QUOTE_CHAR):
        assert i in info, f"GetSqlInfo with no ids should list everything; {i} missing from {sorted(info)}"


REF_CATALOGS = pa.schema([pa.field("catalog_name", pa.utf8(), nullable=False)])
REF_DB_SCHEMAS = pa.schema([
    pa.field("catalog_name", pa.utf8()),
    pa.field("db_schema_name", pa.utf8(), nullable=False),
])
REF_TABLES = pa.schema([
    pa.field("catalog_name", pa.utf8()),
    pa.field("db_schema_name", pa.utf8()),
    pa.field("table_name", pa.utf8(), nullable=False),
    pa.field("table_type", pa.utf8(), nullable=False),
])
REF_TABLES_WITH_SCHEMA = REF_TABLES.append(pa.field("table_schema", pa.binary(), nullable=False))
REF_TABLE_TYPES = pa.schema([pa.field("table_type", pa.utf8(), nullable=False)])


def _assert_ref_schema(actual: pa.Schema, expected: pa.Schema, what: str):
    assert actual.equals(expected), f"{what} schema must be the Flight SQL reference schema\nexpected:\n{expected}\ngot:\n{actual}"


def test_get_catalogs(client, options):
    info, table = fetch(client, options, cmd_get_catalogs())
    _assert_ref_schema(info.schema, REF_CATALOGS, "GetCatalogs")
    names = table.column("catalog_name").to_pylist()
    assert "tpch" in names and "memory" in names, names


def test_get_db_schemas(client, options):
    info, table = fetch(client, options, cmd_get_db_schemas(catalog="tpch"))
    _assert_ref_schema(info.schema, REF_DB_SCHEMAS, "GetDbSchemas")
    rows = table.to_pylist()
    assert {"catalog_name": "tpch", "db_schema_name": "tiny"} in rows, rows
    assert all(r["catalog_name"] == "tpch" for r in rows), f"catalog filter ignored: {rows}"

    _, filtered = fetch(client, options, cmd_get_db_schemas(schema_pattern="ti%"))
    assert "tiny" in filtered.column("db_schema_name").to_pylist()
    assert all(s.startswith("ti") for s in filtered.column("db_schema_name").to_pylist()), filtered


def test_get_tables(client, options):
    info, table = fetch(client, options, cmd_get_tables(catalog="tpch", schema_pattern="tiny"))
    _assert_ref_schema(info.schema, REF_TABLES, "GetTables")
    names = set(table.column("table_name").to_pylist())
    expected = {"nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"}
    assert expected <= names, f"missing {sorted(expected - names)}"


def test_get_tables_with_schema(client, options):
    info, table = fetch(client, options, cmd_get_tables(catalog="tpch", schema_pattern="tiny",
                                                        table_pattern="nation", include_schema=True))
    _assert_ref_schema(info.schema, REF_TABLES_WITH_SCHEMA, "GetTables(include_schema)")
    assert table.column("table_name").to_pylist() == ["nation"], table
    schema = pa.ipc.read_schema(pa.py_buffer(table.column("table_schema")[0].as_py()))
    assert schema.names == ["n_nationkey", "n_name", "n_regionkey", "n_comment"], schema


def test_get_table_types(client, options):
    info, table = fetch(client, options, cmd_get_table_types())
    _assert_ref_schema(info.schema, REF_TABLE_TYPES, "GetTableTypes")
    assert table.num_rows >= 1
