"""Authorization (docs/authorization.md) through real clients: ADBC and raw pyarrow.flight.

Two gateways, each started once for the module, share one password file:
- `opa_gateway`: the example OPA policy of conf/policies (trino.rego + data.json), evaluated
  embedded, with every Trino entry point (allow, batch, rowFilters, batchColumnMasks);
- `rules_gateway`: the same users under conf/policies/rules.json (Trino's file-based rules).

Users (password `<name>-secret`): alice, carol (analysts; EUROPE and AMERICA in data.json),
priya (analysts + privacy; ASIA), erin (engineers), mallory (no group). These mirror
tests/integration/authorization.rs.

Expected values are never hard-coded: they are computed through erin, an engineer who has no
row filter on tpch (her PII columns are masked, but no test compares them to clear text), with
the analyst's row filter written out in SQL. The region's nation keys themselves are looked up
in TPC-H's region/nation tables as erin, not copied from the policy.
"""

from __future__ import annotations

import json
import pathlib
import re
import uuid

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from conftest import _RUNNING, hash_password, start_gateway, write_config

pytestmark = pytest.mark.adbc

REPO = pathlib.Path(__file__).resolve().parents[2]
POLICIES = REPO / "conf" / "policies"

# name -> groups; every password is f"{name}-secret".
AUTHZ_USERS = {
    "alice": ["analysts"],
    "carol": ["analysts"],
    "priya": ["analysts", "privacy"],
    "erin": ["engineers"],
    "mallory": [],
}

TPCH_TABLES = {"nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"}
ANALYST_TABLES = {"customer", "nation", "region"}

PHONE_MASK = re.compile(r"^XX-XXX-XXX-\d{4}$")
RPC_TIMEOUT_S = 120.0
GRPC_PERMISSION_DENIED = 7
SQL_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def password(user: str) -> str:
    return f"{user}-secret"


# --------------------------------------------------------------------------------------
# Gateways


OPA_SECTION = f"""
[authorization.opa]
policy_uri = "data.trino.allow"
batch_policy_uri = "data.trino.batch"
row_filters_policy_uri = "data.trino.rowFilters"
batch_column_masking_policy_uri = "data.trino.batchColumnMasks"

[authorization.opa.embedded]
path = {json.dumps(str(POLICIES))}
"""

RULES_SECTION = f"""
[authorization.rules]
path = {json.dumps(str(POLICIES / "rules.json"))}
"""


@pytest.fixture(scope="module")
def authz_password_file(tmp_path_factory, quiver_binary) -> pathlib.Path:
    path = tmp_path_factory.mktemp("authz-users") / "users.db"
    lines = []
    for user, groups in AUTHZ_USERS.items():
        hashed = hash_password(quiver_binary, password(user))
        lines.append(f"{user}:{hashed}:{','.join(groups)}" if groups else f"{user}:{hashed}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _start_authz_gateway(name: str, tmp_path_factory, password_file: pathlib.Path, section: str):
    workdir = tmp_path_factory.mktemp(name)
    config = workdir / "quiver.toml"
    # conftest's config (password-file auth, no [admin] "*", tpch + memory catalogs) plus a policy.
    write_config(config, password_file)
    config.write_text(config.read_text() + section)
    return start_gateway(name, ["serve", "--config", str(config)], workdir)


def _stop(gw) -> None:
    gw.stop()
    if gw in _RUNNING:
        _RUNNING.remove(gw)


@pytest.fixture(scope="module")
def opa_gateway(tmp_path_factory, authz_password_file):
    gw = _start_authz_gateway("authz-opa", tmp_path_factory, authz_password_file, OPA_SECTION)
    yield gw
    _stop(gw)


@pytest.fixture(scope="module")
def rules_gateway(tmp_path_factory, authz_password_file):
    gw = _start_authz_gateway("authz-rules", tmp_path_factory, authz_password_file, RULES_SECTION)
    yield gw
    _stop(gw)


class Users:
    """Lazily opened ADBC connections, one per user, for one gateway."""

    def __init__(self, gw):
        self.gw = gw
        self._conns = {}

    def __getitem__(self, user: str):
        if user not in self._conns:
            self._conns[user] = self.gw.adbc(user, password(user))
        return self._conns[user]

    def close(self) -> None:
        for c in self._conns.values():
            c.close()


@pytest.fixture(scope="module")
def opa(opa_gateway):
    users = Users(opa_gateway)
    yield users
    users.close()


@pytest.fixture(scope="module")
def rules(rules_gateway):
    users = Users(rules_gateway)
    yield users
    users.close()


# --------------------------------------------------------------------------------------
# Helpers


def rows(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def table(conn, sql, params=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def scalar(conn, sql, params=None):
    got = rows(conn, sql, params)
    assert len(got) == 1 and len(got[0]) == 1, f"{sql!r} should return one value, got {got!r}"
    return got[0][0]


def refused(conn, sql, params=None) -> flight_sql.Error:
    """Runs `sql` expecting the gateway to refuse it; returns the ADBC error."""
    with pytest.raises(flight_sql.Error) as excinfo:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            cur.fetchall()
    return excinfo.value


def describe(err: BaseException) -> str:
    return (
        f"{type(err).__name__}(status_code={getattr(err, 'status_code', None)!r}, "
        f"vendor_code={getattr(err, 'vendor_code', None)!r}): {err}"
    )


def assert_permission_denied(err: flight_sql.Error) -> None:
    # The driver maps gRPC PERMISSION_DENIED to ADBC_STATUS_UNAUTHORIZED.
    assert err.status_code == AdbcStatusCode.UNAUTHORIZED, describe(err)
    assert "PermissionDenied" in str(err) or "PERMISSION_DENIED" in str(err).upper(), describe(err)
    if err.vendor_code is not None:
        assert err.vendor_code == GRPC_PERMISSION_DENIED, describe(err)


def in_list(keys) -> str:
    return ", ".join(str(k) for k in keys)


def region_nation_keys(engineer, region: str):
    """The nation keys of a TPC-H region, looked up as a user without row filters."""
    got = rows(
        engineer,
        "SELECT n_nationkey FROM tpch.tiny.nation JOIN tpch.tiny.region ON n_regionkey = r_regionkey "
        "WHERE r_name = ? ORDER BY n_nationkey",
        (region,),
    )
    keys = [r[0] for r in got]
    assert keys, f"region {region} has no nations"
    return keys


def region_key(engineer, region: str) -> int:
    return scalar(engineer, "SELECT r_regionkey FROM tpch.tiny.region WHERE r_name = ?", (region,))


@pytest.fixture(scope="module")
def europe(opa):
    keys = region_nation_keys(opa["erin"], "EUROPE")
    # The policy's data and TPC-H agree on alice's region (so the filter is the intended one).
    data = json.loads((POLICIES / "data.json").read_text())
    assert data["analyst_regions"]["alice"] == "EUROPE"
    assert sorted(data["regions"]["EUROPE"]["nationkeys"]) == keys
    return keys


@pytest.fixture(scope="module")
def alice_expected_count(opa, europe):
    """customer rows in alice's region, counted by erin with the filter written out."""
    erin = opa["erin"]
    n = scalar(erin, f"SELECT count(*) FROM customer WHERE c_nationkey IN ({in_list(europe)})")
    total = scalar(erin, "SELECT count(*) FROM customer")
    assert 0 < n < total, f"the EUROPE filter should keep some, not all, customers ({n} of {total})"
    return n


# --------------------------------------------------------------------------------------
# 1. Row filter and masks through ADBC


def test_adbc_analyst_reads_only_her_region(opa, europe, alice_expected_count):
    alice = opa["alice"]
    assert scalar(alice, "SELECT count(*) FROM customer") == alice_expected_count
    nations = [r[0] for r in rows(alice, "SELECT DISTINCT c_nationkey FROM customer ORDER BY 1")]
    assert nations == europe


def test_adbc_pii_is_masked_and_keeps_names_and_types(opa, europe):
    alice, erin = opa["alice"], opa["erin"]
    sql = "SELECT c_custkey, c_name, c_phone, c_address, c_nationkey FROM customer ORDER BY c_custkey LIMIT 50"
    got = table(alice, sql)
    assert got.num_rows == 50
    phones = got.column("c_phone").to_pylist()
    assert all(isinstance(p, str) and PHONE_MASK.match(p) for p in phones), phones
    assert set(got.column("c_address").to_pylist()) == {"****"}
    # erin (not in `privacy`) gets the same mask, row for row: alice's rows are erin's EUROPE rows.
    truth = table(
        erin,
        "SELECT c_custkey, c_name, c_phone, c_address, c_nationkey FROM customer "
        f"WHERE c_nationkey IN ({in_list(europe)}) ORDER BY c_custkey LIMIT 50",
    )
    assert got.column("c_custkey").to_pylist() == truth.column("c_custkey").to_pylist()
    assert phones == truth.column("c_phone").to_pylist()

    # Names and types are the table's: compare with the declared schema and with columns that
    # are not masked for anyone (c_name has the same SQL type as c_phone and c_address).
    assert got.schema.names == ["c_custkey", "c_name", "c_phone", "c_address", "c_nationkey"]
    declared = erin.adbc_get_table_schema("customer", catalog_filter="tpch", db_schema_filter="tiny")
    plain = table(erin, "SELECT c_custkey, c_name, c_nationkey FROM customer LIMIT 1").schema
    assert got.schema.field("c_custkey").type == plain.field("c_custkey").type == pa.int64(), got.schema
    assert got.schema.field("c_nationkey").type == plain.field("c_nationkey").type, got.schema
    for masked in ("c_phone", "c_address"):
        t = got.schema.field(masked).type
        assert t == plain.field("c_name").type, f"{masked}: {t} vs c_name {plain.field('c_name').type}"
        assert t == declared.field(masked).type, f"{masked}: {t} vs declared {declared.field(masked).type}"


# --------------------------------------------------------------------------------------
# 2. A hidden column


def test_adbc_hidden_column_answers_like_a_missing_one(opa):
    # A column alice may not see is "no field", exactly as a column that does not exist; the
    # list of valid fields names only what she may see.
    hidden = refused(opa["alice"], "SELECT c_acctbal FROM customer")
    missing = refused(opa["alice"], "SELECT c_nosuchc FROM customer")
    assert hidden.status_code == missing.status_code == AdbcStatusCode.INVALID_ARGUMENT, describe(hidden)
    assert "No field named c_acctbal" in str(hidden), describe(hidden)
    assert str(hidden).count("c_acctbal") == str(missing).count("c_nosuchc"), (describe(hidden), describe(missing))
    # The same column for erin (engineer): allowed.
    assert len(rows(opa["erin"], "SELECT c_acctbal FROM customer LIMIT 3")) == 3


# --------------------------------------------------------------------------------------
# 3. EXPLAIN


def test_adbc_explain_is_refused_when_a_filter_or_mask_applies(opa, europe):
    err = refused(opa["alice"], "EXPLAIN SELECT c_custkey FROM customer")
    text = str(err)
    assert "row filter or column mask" in text, describe(err)
    assert in_list(europe[2:4]) not in text and "IN (" not in text, f"EXPLAIN refusal leaks the filter: {text}"
    assert_permission_denied(err)

    plan = rows(opa["erin"], "EXPLAIN SELECT n_name FROM nation")
    assert plan, "EXPLAIN returned no rows"
    assert any("nation" in str(cell) for row in plan for cell in row), plan


# --------------------------------------------------------------------------------------
# 4. Flight SQL metadata through adbc_get_objects


def _tiny(conn):
    catalogs = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    tpch = [c for c in catalogs if c["catalog_name"] == "tpch"]
    assert len(tpch) == 1, [c["catalog_name"] for c in catalogs]
    tiny = [s for s in tpch[0]["catalog_db_schemas"] or [] if s["db_schema_name"] == "tiny"]
    assert len(tiny) == 1, tpch[0]["catalog_db_schemas"]
    return {t["table_name"]: t for t in tiny[0]["db_schema_tables"] or []}


def test_adbc_get_objects_lists_only_visible_tables_and_columns(opa):
    alice_tables = _tiny(opa["alice"])
    assert set(alice_tables) == ANALYST_TABLES
    columns = {c["column_name"] for c in alice_tables["customer"]["table_columns"] or []}
    assert "c_acctbal" not in columns, columns
    assert {"c_custkey", "c_phone", "c_address", "c_nationkey"} <= columns, columns

    erin_tables = _tiny(opa["erin"])
    assert set(erin_tables) == TPCH_TABLES
    erin_columns = {c["column_name"] for c in erin_tables["customer"]["table_columns"] or []}
    assert erin_columns == columns | {"c_acctbal"}, erin_columns


# --------------------------------------------------------------------------------------
# 5. Prepared statement with a parameter


def test_adbc_prepared_statement_with_parameter_is_filtered(opa, europe):
    expected = scalar(
        opa["erin"],
        f"SELECT count(*) FROM customer WHERE c_nationkey IN ({in_list(europe)}) AND c_custkey > 10",
    )
    assert expected > 0
    alice = opa["alice"]
    assert scalar(alice, "SELECT count(*) FROM customer WHERE c_custkey > ?", (10,)) == expected
    # A second binding of the same statement.
    expected_100 = scalar(
        opa["erin"],
        f"SELECT count(*) FROM customer WHERE c_nationkey IN ({in_list(europe)}) AND c_custkey > 100",
    )
    assert scalar(alice, "SELECT count(*) FROM customer WHERE c_custkey > ?", (100,)) == expected_100


# --------------------------------------------------------------------------------------
# 6. information_schema


def test_information_schema_lists_only_visible_tables(opa):
    sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'tiny'"
    assert {r[0] for r in rows(opa["alice"], sql)} == ANALYST_TABLES
    assert {r[0] for r in rows(opa["erin"], sql)} == TPCH_TABLES
    cols = {
        r[0]
        for r in rows(
            opa["alice"],
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'tiny' AND table_name = 'customer'",
        )
    }
    assert cols and "c_acctbal" not in cols and "c_phone" in cols, cols


# --------------------------------------------------------------------------------------
# 7. Views and writes


def test_view_applies_the_readers_filter_and_masks(opa, alice_expected_count):
    alice, erin = opa["alice"], opa["erin"]
    view = f"memory.default.v_{uuid.uuid4().hex[:10]}"
    rows(erin, f"CREATE VIEW {view} AS SELECT c_custkey, c_phone, c_nationkey FROM tpch.tiny.customer")
    total = scalar(erin, "SELECT count(*) FROM tpch.tiny.customer")
    assert scalar(erin, f"SELECT count(*) FROM {view}") == total
    assert scalar(alice, f"SELECT count(*) FROM {view}") == alice_expected_count
    phones = [r[0] for r in rows(alice, f"SELECT c_phone FROM {view} LIMIT 20")]
    assert len(phones) == 20 and all(PHONE_MASK.match(p) for p in phones), phones


def test_write_copying_filtered_rows_is_refused(opa):
    alice = opa["alice"]
    target = f"memory.default.copy_{uuid.uuid4().hex[:10]}"
    err = refused(alice, f"CREATE TABLE {target} AS SELECT c_custkey FROM tpch.tiny.customer")
    assert "row filter or column mask" in str(err) and "tpch.tiny.customer" in str(err), describe(err)
    assert_permission_denied(err)
    # Nothing was created.
    name = target.rsplit(".", 1)[1]
    assert scalar(opa["erin"], f"SELECT count(*) FROM memory.information_schema.tables WHERE table_name = '{name}'") == 0
    # Without reading tpch, memory is alice's scratch space.
    own = f"memory.default.own_{uuid.uuid4().hex[:10]}"
    rows(alice, f"CREATE TABLE {own} AS VALUES (1), (2)")
    assert scalar(alice, f"SELECT count(*) FROM {own}") == 2


# --------------------------------------------------------------------------------------
# 8. Raw Flight (pyarrow.flight)


def _cmd_statement_query(query: str) -> bytes:
    """google.protobuf.Any{type_url, value = CommandStatementQuery{query = 1}}."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | 0x80 if n else b)
            if not n:
                return bytes(out)

    def field(num: int, value: bytes) -> bytes:
        return varint((num << 3) | 2) + varint(len(value)) + value

    inner = field(1, query.encode())
    return field(1, (SQL_PREFIX + "CommandStatementQuery").encode()) + field(2, inner)


@pytest.fixture(scope="module")
def raw(opa_gateway):
    client = flight.FlightClient(opa_gateway.flight_location)

    def login(user: str) -> flight.FlightCallOptions:
        header = client.authenticate_basic_token(user, password(user))
        return flight.FlightCallOptions(headers=[header], timeout=RPC_TIMEOUT_S)

    yield client, login
    client.close()


def _flight_query(client, options, sql: str):
    info = client.get_flight_info(flight.FlightDescriptor.for_command(_cmd_statement_query(sql)), options)
    assert info.endpoints, "no endpoint"
    parts = []
    for ep in info.endpoints:
        reader = client.do_get(ep.ticket, options)
        assert reader.schema.equals(info.schema, check_metadata=True), (
            f"DoGet schema differs from FlightInfo schema for {sql!r}\n"
            f"FlightInfo: {info.schema}\nDoGet:      {reader.schema}"
        )
        parts.append(reader.read_all())
    return info, pa.concat_tables(parts)


def test_flight_error_oracle_does_not_see_hidden_rows(raw, alice_expected_count):
    client, login = raw
    oracle = "SELECT count(*) AS n FROM customer WHERE 1 / (c_nationkey - 1) > -100"
    # The oracle is real: a caller who sees nation 1 (AMERICA) gets a division by zero.
    # (pyarrow raises INVALID_ARGUMENT as ArrowInvalid, other codes as FlightError subclasses.)
    with pytest.raises(pa.ArrowException) as excinfo:
        _flight_query(client, login("erin"), oracle)
    assert "divide by zero" in str(excinfo.value).lower(), str(excinfo.value)
    # alice's filter is evaluated first: her predicate never sees nation 1.
    _, got = _flight_query(client, login("alice"), oracle)
    assert got.column("n").to_pylist() == [alice_expected_count]


def test_flight_masked_query_schema_matches_and_denial_is_permission_denied(raw):
    client, login = raw
    alice = login("alice")
    info, got = _flight_query(
        client, alice, "SELECT c_custkey, c_phone, c_address FROM customer ORDER BY c_custkey LIMIT 10"
    )
    assert got.num_rows == 10
    assert info.schema.names == ["c_custkey", "c_phone", "c_address"], info.schema
    assert all(PHONE_MASK.match(p) for p in got.column("c_phone").to_pylist())
    assert set(got.column("c_address").to_pylist()) == {"****"}
    # A hidden column is "no field" (INVALID_ARGUMENT), as a missing one would be; a visible
    # table she may not read is PERMISSION_DENIED.
    with pytest.raises(pa.ArrowInvalid) as excinfo:
        _flight_query(client, alice, "SELECT c_acctbal FROM customer")
    assert "No field named c_acctbal" in str(excinfo.value), str(excinfo.value)
    with pytest.raises(flight.FlightUnauthorizedError) as excinfo:
        _flight_query(client, alice, "SELECT * FROM customer")
    assert "c_acctbal" not in str(excinfo.value), str(excinfo.value)


# --------------------------------------------------------------------------------------
# 9. The same operations under rules.json


def _rule(user: str, table_name: str) -> dict:
    for r in json.loads((POLICIES / "rules.json").read_text())["tables"]:
        if r.get("user") == user and r.get("table") == table_name:
            return r
    raise AssertionError(f"rules.json has no rule for {user} on {table_name}")


def test_rules_filter_and_masks(rules):
    alice, erin = rules["alice"], rules["erin"]
    europe = region_nation_keys(erin, "EUROPE")
    # alice's customer rule in rules.json is exactly her region.
    assert _rule("alice", "customer")["filter"] == f"c_nationkey IN ({in_list(europe)})"
    expected = scalar(erin, f"SELECT count(*) FROM customer WHERE c_nationkey IN ({in_list(europe)})")
    assert 0 < expected < scalar(erin, "SELECT count(*) FROM customer")
    assert scalar(alice, "SELECT count(*) FROM customer") == expected
    assert [r[0] for r in rows(alice, "SELECT DISTINCT c_nationkey FROM customer ORDER BY 1")] == europe
    # nation: filter "n_regionkey = 3" (EUROPE).
    europe_key = region_key(erin, "EUROPE")
    assert scalar(alice, "SELECT count(*) FROM nation") == scalar(
        erin, "SELECT count(*) FROM nation WHERE n_regionkey = ?", (europe_key,)
    )
    got = table(alice, "SELECT c_custkey, c_phone, c_address FROM customer ORDER BY c_custkey LIMIT 20")
    assert got.num_rows == 20
    assert all(PHONE_MASK.match(p) for p in got.column("c_phone").to_pylist()), got.column("c_phone")
    assert set(got.column("c_address").to_pylist()) == {"****"}


def test_rules_denied_column_and_read_only_catalog(rules):
    alice = rules["alice"]
    err = refused(alice, "SELECT c_acctbal FROM customer")
    assert err.status_code == AdbcStatusCode.INVALID_ARGUMENT, describe(err)
    assert "No field named c_acctbal" in str(err), describe(err)
    # analysts: "allow": "read-only" on tpch.
    err = refused(alice, f"CREATE TABLE tpch.tiny.t_{uuid.uuid4().hex[:8]} (a INT)")
    assert "CreateTable" in str(err), describe(err)
    assert_permission_denied(err)
    # No table rule lets alice read orders (the analysts' catch-all names customer|nation|region).
    err = refused(alice, "SELECT count(*) FROM orders")
    assert "tpch.tiny.orders" in str(err) and "not found" in str(err), describe(err)
    assert err.status_code == AdbcStatusCode.NOT_FOUND, describe(err)


def test_rules_analyst_without_own_rule_sees_no_rows(rules):
    # carol's rule needs group `privacy`, which she lacks: the analysts' catch-all applies,
    # whose filter is "false".
    assert _rule("carol", "customer")["group"] == "privacy" and "privacy" not in AUTHZ_USERS["carol"]
    assert scalar(rules["erin"], "SELECT count(*) FROM customer") > 0
    assert scalar(rules["carol"], "SELECT count(*) FROM customer") == 0
    # mallory (no group) matches no catalog rule: the catalog is "not found" to her.
    err = refused(rules["mallory"], "SELECT count(*) FROM nation")
    assert "catalog `tpch` not found" in str(err), describe(err)
    assert err.status_code == AdbcStatusCode.NOT_FOUND, describe(err)


# --------------------------------------------------------------------------------------
# Enforcement integrity (issue 11): what the worker runs is what the gateway authorized,
# through the real ADBC driver (DB-API prepares every statement).


def test_adbc_view_swapped_under_a_view_runs_the_gateways_expansion(opa):
    alice = opa["alice"]
    suffix = uuid.uuid4().hex[:8]
    va, vb = f"memory.default.va_{suffix}", f"memory.default.vb_{suffix}"
    for sql in [
        f"CREATE VIEW {va} AS SELECT c_custkey, c_name, c_phone, c_address, c_nationkey FROM tpch.tiny.customer",
        f"CREATE VIEW {vb} AS SELECT * FROM {va}",
        f"DROP VIEW {va}",
        f"CREATE VIEW {va} AS SELECT CAST(1 AS BIGINT) c_custkey, 'n' c_name, 'p' c_phone, "
        f"'a' c_address, 1 c_nationkey",
    ]:
        rows(alice, sql)
    assert rows(alice, f"SELECT count(*), count(DISTINCT c_nationkey) FROM {vb}") == [(1, 1)]
    assert rows(alice, f"SELECT c_phone FROM {vb}") == [("p",)]


def test_adbc_session_schema_with_non_ascii_name_is_the_one_used(opa_gateway):
    suffix = uuid.uuid4().hex[:6]
    schema = f"é{suffix}"
    with opa_gateway.adbc("alice", password("alice")) as conn:
        for sql in [
            f'CREATE SCHEMA memory."{schema}"',
            f'CREATE TABLE memory."{schema}".customer AS SELECT \'dummy\' AS c_phone',
        ]:
            rows(conn, sql)
        conn.adbc_current_catalog = "memory"
        conn.adbc_current_db_schema = schema
        assert rows(conn, "SELECT c_phone FROM customer") == [("dummy",)]


def test_adbc_explain_analyze_of_a_write_is_checked_as_the_write(opa, erin_nation_count):
    alice = opa["alice"]
    err = refused(alice, "EXPLAIN ANALYZE INSERT INTO tpch.tiny.nation VALUES (99, 'ALICELAND', 3, 'x')")
    assert_permission_denied(err)
    assert scalar(opa["erin"], "SELECT count(*) FROM tpch.tiny.nation") == erin_nation_count


@pytest.fixture(scope="module")
def erin_nation_count(opa):
    return scalar(opa["erin"], "SELECT count(*) FROM tpch.tiny.nation")


def test_adbc_hidden_column_error_lists_no_hidden_column(opa):
    err = refused(opa["alice"], "SELECT c_acctbl FROM tpch.tiny.customer")
    assert "c_acctbal" not in str(err), describe(err)
    assert "c_acctbl" in str(err), describe(err)


def test_adbc_deep_statement_is_invalid_and_the_gateway_survives(opa):
    alice = opa["alice"]
    err = refused(alice, "SELECT " + "+".join(["1"] * 5000))
    assert "max_statement_depth" in str(err), describe(err)
    assert scalar(alice, "SELECT " + "+".join(["1"] * 500)) == 500
