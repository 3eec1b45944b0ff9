"""The result cache (docs/cache.md) through real clients: ADBC and raw pyarrow.flight.

Two gateways share the password file and the example OPA policy of conf/policies (as in
test_authorization.py):
- `cached_gateway` has a `[cache]` table;
- `plain_gateway` has none: its answers are the truth every cached answer is compared with.

How the cache was used is read from the gateway itself: `quiver_cache_requests_total{result}`
on /metrics, `"worker": "cache"` in /v1/query, and the `x-quiver-cache` response header (seen by
pyarrow.flight client middleware).

ADBC: the DB-API `cursor.execute` always prepares the statement (CreatePreparedStatement, then
the prepared-statement query); the gateway caches prepared statements per bound parameters. Most
tests run plain Flight SQL statement queries (CommandStatementQuery) with ADBC's own statement
API (`set_sql_query` + `execute_query`, no `prepare`); the DB-API path is tested at the end.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Dict, List, Optional

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from test_authorization import (  # noqa: F401  (authz_password_file is a fixture)
    OPA_SECTION,
    Users,
    _start_authz_gateway,
    _stop,
    authz_password_file,
    in_list,
    password,
    region_nation_keys,
    scalar,
)
from test_pyarrow_flight import cmd_statement_query

pytestmark = pytest.mark.adbc

CONTROL_HEADER = "x-quiver-cache-control"
CALL_HEADER = adbc_driver_flightsql.ConnectionOptions.RPC_CALL_HEADER_PREFIX.value + CONTROL_HEADER
SESSION_OPTION = adbc_driver_flightsql.ConnectionOptions.OPTION_SESSION_OPTION_PREFIX.value + "cache_control"
RPC_TIMEOUT_S = 120.0

CACHE_SECTION = """
[cache]
ttl_secs = 300
"""


# --------------------------------------------------------------------------------------
# Gateways and connections


@pytest.fixture(scope="module")
def cached_gateway(tmp_path_factory, authz_password_file):
    gw = _start_authz_gateway("cache-on", tmp_path_factory, authz_password_file, OPA_SECTION + CACHE_SECTION)
    yield gw
    _stop(gw)


@pytest.fixture(scope="module")
def plain_gateway(tmp_path_factory, authz_password_file):
    gw = _start_authz_gateway("cache-off", tmp_path_factory, authz_password_file, OPA_SECTION)
    yield gw
    _stop(gw)


@pytest.fixture(scope="module")
def cached(cached_gateway):
    users = Users(cached_gateway)
    yield users
    users.close()


@pytest.fixture(scope="module")
def plain(plain_gateway):
    users = Users(plain_gateway)
    yield users
    users.close()


# --------------------------------------------------------------------------------------
# Helpers


def run(conn, sql: str, control: Optional[str] = None) -> pa.Table:
    """One Flight SQL statement query (not prepared) through ADBC's statement API.

    `control` is sent as the x-quiver-cache-control call header of this statement's calls.
    """
    with conn.cursor() as cur:
        stmt = cur.adbc_statement
        if control is not None:
            stmt.set_options(**{CALL_HEADER: control})
        stmt.set_sql_query(sql)
        handle, _ = stmt.execute_query()
        return pa.RecordBatchReader.from_stream(handle).read_all()


def dbapi_table(conn, sql: str) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def basic(user: str) -> Dict[str, str]:
    token = base64.b64encode(f"{user}:{password(user)}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def cache_requests(gw, user: str) -> Dict[str, float]:
    """quiver_cache_requests_total by result (HIT, MISS, BYPASS; absent = 0), read as `user`.

    The metric has no user label (names would leak to every reader and grow without bound);
    the tests run one statement at a time, so the deltas are the caller's own."""
    status, _, body = gw.http_get("/metrics", headers=basic(user))
    assert status == 200, body
    counts = {"HIT": 0.0, "MISS": 0.0, "BYPASS": 0.0}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "quiver_cache_requests_total":
                counts[sample.labels["result"]] = counts.get(sample.labels["result"], 0.0) + sample.value
    return counts


def delta(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(before) | set(after))}


def history(gw, user: str, sql: str) -> List[dict]:
    """The user's /v1/query entries for exactly this SQL text, oldest first."""
    status, _, body = gw.http_get("/v1/query", headers=basic(user))
    assert status == 200, body
    entries = [q for q in json.loads(body) if q.get("user") == user and q.get("query") == sql]
    return sorted(entries, key=lambda q: (q["createdMs"], q.get("startedMs") or 0))


def assert_same(got: pa.Table, truth: pa.Table, what: str) -> None:
    assert got.schema.equals(truth.schema), f"{what}: schema\n{got.schema}\nvs\n{truth.schema}"
    assert got.equals(truth), f"{what}:\n{got.to_pylist()}\nvs\n{truth.to_pylist()}"


def failure(conn, sql: str, control: Optional[str] = None) -> flight_sql.Error:
    with pytest.raises(flight_sql.Error) as excinfo:
        run(conn, sql, control)
    return excinfo.value


def assert_failed_precondition(err: BaseException, needle: str) -> None:
    text = str(err)
    assert "FailedPrecondition" in text or "FAILED_PRECONDITION" in text.upper(), text
    assert needle in text, text


# --------------------------------------------------------------------------------------
# 1. A repeat is a hit: same table, metrics, query history


def test_adbc_repeat_is_served_by_the_cache(cached, plain, cached_gateway):
    sql = "SELECT n_regionkey, count(*) AS n, min(n_name) AS first_name FROM nation GROUP BY n_regionkey ORDER BY 1"
    truth = run(plain["erin"], sql)
    assert truth.num_rows > 0

    before = cache_requests(cached_gateway, "erin")
    first = run(cached["erin"], sql)
    second = run(cached["erin"], sql)
    assert_same(first, truth, "first run (miss) vs the gateway without a cache")
    assert_same(second, first, "second run (hit) vs first run")
    assert delta(before, cache_requests(cached_gateway, "erin")) == {"HIT": 1, "MISS": 1, "BYPASS": 0}

    runs = history(cached_gateway, "erin", sql)
    assert len(runs) == 2, runs
    assert runs[0]["worker"] != "cache" and runs[0]["worker"].startswith("grpc://"), runs[0]
    assert runs[1]["worker"] == "cache", runs[1]
    assert runs[1]["rows"] == runs[0]["rows"] == truth.num_rows, runs


# --------------------------------------------------------------------------------------
# 2. only-if-cached: as a call header and as a session option


def test_adbc_only_if_cached_header(cached, plain, cached_gateway):
    erin = cached["erin"]
    sql = "SELECT r_name, length(r_comment) AS comment_length FROM region ORDER BY r_name"
    truth = run(plain["erin"], sql)

    before = cache_requests(cached_gateway, "erin")
    assert_failed_precondition(failure(erin, sql, "only-if-cached"), "only-if-cached")
    # Nothing ran: no finished query for it, and the refusal is neither a hit nor a miss.
    assert not [q for q in history(cached_gateway, "erin", sql) if q["state"] == "FINISHED"]
    assert delta(before, cache_requests(cached_gateway, "erin")) == {"HIT": 0, "MISS": 0, "BYPASS": 0}

    assert_same(run(erin, sql), truth, "normal run")
    assert_same(run(erin, sql, "only-if-cached"), truth, "only-if-cached after a normal run")
    assert delta(before, cache_requests(cached_gateway, "erin")) == {"HIT": 1, "MISS": 1, "BYPASS": 0}
    assert history(cached_gateway, "erin", sql)[-1]["worker"] == "cache"


def test_adbc_only_if_cached_session_option(cached_gateway, plain):
    # A connection of its own: the session option applies to every statement of its session.
    erin = cached_gateway.adbc("erin", password("erin"))
    stored = "SELECT n_name, n_regionkey * 10 AS r10 FROM nation ORDER BY n_name"
    never_run = "SELECT r_regionkey, upper(r_name) AS up FROM region ORDER BY 1"
    truth = run(plain["erin"], stored)
    assert_same(run(erin, stored), truth, "normal run")

    erin.adbc_connection.set_options(**{SESSION_OPTION: "only-if-cached"})
    assert_failed_precondition(failure(erin, never_run), "only-if-cached")
    assert not [q for q in history(cached_gateway, "erin", never_run) if q["state"] == "FINISHED"]
    before = cache_requests(cached_gateway, "erin")
    assert_same(run(erin, stored), truth, "only-if-cached (session) after a normal run")
    assert delta(before, cache_requests(cached_gateway, "erin")) == {"HIT": 1, "MISS": 0, "BYPASS": 0}
    # The header wins over the session option.
    assert_same(run(erin, never_run, "default"), run(plain["erin"], never_run), "header `default` over the session")


# --------------------------------------------------------------------------------------
# 3. pyarrow.flight: no-cache header, x-quiver-cache response header


class CacheStatus(flight.ClientMiddlewareFactory):
    """Records the x-quiver-cache response header of every GetFlightInfo and DoGet."""

    def __init__(self):
        self.seen: List[tuple] = []

    def start_call(self, info):
        factory = self
        method = info.method

        class Middleware(flight.ClientMiddleware):
            def received_headers(self, headers):
                if method in (flight.FlightMethod.GET_FLIGHT_INFO, flight.FlightMethod.DO_GET):
                    value = headers.get("x-quiver-cache")
                    if value:
                        factory.seen.append((method, value[0]))

        return Middleware()

    def take(self) -> Dict[str, str]:
        """{"info": ..., "get": ...} of the calls since the last take()."""
        got = {}
        for method, value in self.seen:
            key = "info" if method == flight.FlightMethod.GET_FLIGHT_INFO else "get"
            assert key not in got, f"two {key} statuses: {self.seen}"
            got[key] = value
        self.seen.clear()
        return got


def flight_query(gw, user: str, sql: str, headers=()):
    status = CacheStatus()
    client = flight.FlightClient(gw.flight_location, middleware=[status])
    try:
        token = client.authenticate_basic_token(user, password(user))
        status.seen.clear()
        options = flight.FlightCallOptions(headers=[token, *headers], timeout=RPC_TIMEOUT_S)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd_statement_query(sql)), options)
        assert len(info.endpoints) == 1, info.endpoints
        reader = client.do_get(info.endpoints[0].ticket, options)
        table = reader.read_all()
        assert reader.schema.equals(info.schema), f"{reader.schema}\nvs FlightInfo\n{info.schema}"
        return table, info, status.take()
    finally:
        client.close()


def test_flight_no_cache_header_and_x_quiver_cache(cached_gateway, plain_gateway):
    sql = "SELECT o_orderpriority, count(*) AS n, max(o_totalprice) AS top FROM orders GROUP BY 1 ORDER BY 1"
    no_cache = [(CONTROL_HEADER.encode(), b"no-cache")]
    truth, _, plain_status = flight_query(plain_gateway, "erin", sql)
    assert truth.num_rows > 0
    # Without [cache] the header is answered with BYPASS, and no-cache has no effect.
    assert plain_status == {"info": "BYPASS", "get": "BYPASS"}, plain_status
    assert flight_query(plain_gateway, "erin", sql, no_cache)[2] == {"info": "BYPASS", "get": "BYPASS"}

    before = cache_requests(cached_gateway, "erin")
    expected = [
        ((), {"info": "MISS", "get": "MISS"}),
        ((), {"info": "HIT", "get": "HIT"}),
        (no_cache, {"info": "MISS", "get": "MISS"}),
        ((), {"info": "HIT", "get": "HIT"}),
    ]
    for i, (headers, statuses) in enumerate(expected):
        table, info, seen = flight_query(cached_gateway, "erin", sql, headers)
        assert seen == statuses, f"call {i} (headers {headers}): {seen}"
        assert_same(table, truth, f"call {i}")
        assert info.total_records in (-1, truth.num_rows), info.total_records
    assert delta(before, cache_requests(cached_gateway, "erin")) == {"HIT": 2, "MISS": 2, "BYPASS": 0}
    workers = [q["worker"] for q in history(cached_gateway, "erin", sql)]
    assert len(workers) == 4 and [w == "cache" for w in workers] == [False, True, False, True], workers


# --------------------------------------------------------------------------------------
# 4. Users with different row filters never share an entry


def test_row_filters_keep_cached_results_apart(cached, plain, cached_gateway):
    sql = "SELECT count(*) FROM customer"
    truth_conn = plain["erin"]
    total = scalar(truth_conn, sql)
    europe = scalar(
        truth_conn, f"{sql} WHERE c_nationkey IN ({in_list(region_nation_keys(truth_conn, 'EUROPE'))})"
    )
    america = scalar(
        truth_conn, f"{sql} WHERE c_nationkey IN ({in_list(region_nation_keys(truth_conn, 'AMERICA'))})"
    )
    assert 0 < europe < total and 0 < america < total, (europe, america, total)
    expected = {"alice": europe, "erin": total, "carol": america}
    # The gateway without a cache agrees (the policy is the one intended).
    for user, n in expected.items():
        assert run(plain[user], sql).column(0).to_pylist() == [n], user

    users = ["alice", "erin", "carol"]
    before = cache_requests(cached_gateway, "erin")
    for round_ in range(2):
        for user in users:
            got = run(cached[user], sql).column(0).to_pylist()
            assert got == [expected[user]], f"round {round_}, {user}: {got}, expected {expected[user]}"
    # The metric has no user label: three users, each one miss then one hit. Who was served
    # from the cache is read from each user's query history.
    assert delta(before, cache_requests(cached_gateway, "erin")) == {"HIT": 3, "MISS": 3, "BYPASS": 0}
    for user in users:
        workers = [q["worker"] for q in history(cached_gateway, user, sql)]
        assert len(workers) == 2 and workers[0] != "cache" and workers[1] == "cache", (user, workers)


# --------------------------------------------------------------------------------------
# 5. Non-deterministic statements are never cached


def test_random_is_never_cached(cached, cached_gateway):
    erin = cached["erin"]
    sql = "SELECT random() AS r"
    before = cache_requests(cached_gateway, "erin")
    values = [run(erin, sql).column("r").to_pylist() for _ in range(2)]
    assert all(len(v) == 1 for v in values), values
    assert values[0] != values[1], f"two runs of random() gave {values}"
    assert delta(before, cache_requests(cached_gateway, "erin")) == {"HIT": 0, "MISS": 0, "BYPASS": 2}
    assert "cache" not in [q["worker"] for q in history(cached_gateway, "erin", sql)]
    assert_failed_precondition(failure(erin, sql, "only-if-cached"), "not deterministic")


# --------------------------------------------------------------------------------------
# 6. The ADBC DB-API (cursor.execute), as docs/cache.md shows it


def test_adbc_dbapi_cursor_execute_is_served_by_the_cache(cached, plain, cached_gateway):
    # cursor.execute prepares the statement; docs/cache.md's ADBC example relies on it being cached.
    sql = "SELECT s_nationkey, count(*) AS n FROM supplier GROUP BY 1 ORDER BY 1"
    truth = dbapi_table(plain["erin"], sql)
    before = cache_requests(cached_gateway, "erin")
    first = dbapi_table(cached["erin"], sql)
    second = dbapi_table(cached["erin"], sql)
    assert_same(first, truth, "first cursor.execute")
    assert_same(second, truth, "second cursor.execute")
    assert delta(before, cache_requests(cached_gateway, "erin")) == {"HIT": 1, "MISS": 1, "BYPASS": 0}
    assert [q["worker"] == "cache" for q in history(cached_gateway, "erin", sql)] == [False, True]


def test_adbc_dbapi_only_if_cached_is_not_ignored(cached_gateway):
    # Every call of this connection carries only-if-cached; the statement was never run.
    erin = cached_gateway.adbc("erin", password("erin"), **{CALL_HEADER: "only-if-cached"})
    sql = "SELECT ps_partkey % 7 AS k, count(*) AS n FROM partsupp GROUP BY 1 ORDER BY 1"
    with pytest.raises(flight_sql.Error) as excinfo:
        dbapi_table(erin, sql)
    assert_failed_precondition(excinfo.value, "only-if-cached")


def test_adbc_dbapi_insert_invalidates_the_cached_count(cached, cached_gateway):
    """ADBC's DB-API prepares every statement, INSERT included: the write must evict the cached
    results of the table it names before cursor.execute returns (issue 11, finding 7)."""
    erin = cached["erin"]
    name = f"memory.default.p_{uuid.uuid4().hex[:8]}"
    with erin.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} AS SELECT 1 AS a")
        cur.fetchall()
    count = f"SELECT count(*) FROM {name}"
    assert scalar(erin, count) == 1
    before = cache_requests(cached_gateway, "erin")
    assert scalar(erin, count) == 1
    assert delta(before, cache_requests(cached_gateway, "erin"))["HIT"] == 1
    with erin.cursor() as cur:
        cur.execute(f"INSERT INTO {name} VALUES (2)")
        cur.fetchall()
    assert scalar(erin, count) == 2
