"""Operating the gateway with real processes: a worker process killed mid-stream, ejection
and re-admission, SIGTERM with a stream in flight, and /metrics read by Prometheus's own
text-format parser."""

from __future__ import annotations

import json
import pathlib
import signal
import socket
import subprocess
import time

import pyarrow.flight as flight
import pytest
# The gateway serves OpenMetrics text (application/openmetrics-text); this is Prometheus's own,
# strict parser for it.
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import LOOPBACK, _toml_str, start_gateway
from test_pyarrow_flight import cmd_statement_query

RPC = flight.FlightCallOptions(timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def start_worker(binary: str, workdir: pathlib.Path, port: int) -> subprocess.Popen:
    cfg = workdir / "worker.toml"
    cfg.write_text('[engine]\ntarget_partitions = 2\n[[engine.catalogs]]\nkind = "tpch"\nname = "tpch"\nscale_factor = 0.01\n')
    proc = subprocess.Popen(
        [binary, "engine", "--config", str(cfg), "--flight-addr", f"{LOOPBACK}:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    assert json.loads(line)["event"] == "ready", line
    return proc


def statement_ticket(client: flight.FlightClient, sql: str, options: flight.FlightCallOptions = RPC) -> flight.Ticket:
    """GetFlightInfo for a statement (the Flight SQL command encoded by the suite's encoder)."""
    info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd_statement_query(sql)), options)
    return info.endpoints[0].ticket


def pools(gw) -> list:
    status, _, body = gw.http_get("/v1/pools")
    assert status == 200, body
    return json.loads(body)


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def worker_states(gw) -> dict:
    return {w["uri"]: w["state"] for w in pools(gw)[0]["workers"]}


@pytest.fixture
def two_workers(tmp_path, quiver_binary):
    ports = [free_port(), free_port()]
    procs = [start_worker(quiver_binary, tmp_path, p) for p in ports]
    yield ports, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def pool_gateway(tmp_path, ports, extra_server: str = "") -> pathlib.Path:
    config = tmp_path / "quiver.toml"
    workers = ", ".join(_toml_str(f"grpc://{LOOPBACK}:{p}") for p in ports)
    config.write_text(
        f"""\
[server]
flight_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
{extra_server}
[admin]
users = ["*"]
[session]
default_catalog = "tpch"
default_schema = "tiny"
[[pools]]
name = "workers"
workers = [{workers}]
[pools.health]
interval_ms = 100
timeout_ms = 500
eject_after_failures = 2
backoff_base_ms = 200
backoff_max_ms = 400
"""
    )
    return config


def test_a_worker_process_killed_mid_stream_gives_unavailable_and_the_pool_heals(tmp_path, quiver_binary, two_workers):
    ports, procs = two_workers
    gw = start_gateway("pool-gateway", ["serve", "--config", str(pool_gateway(tmp_path, ports))], tmp_path / "gw")
    try:
        client = flight.FlightClient(gw.flight_location)
        reader = client.do_get(statement_ticket(client, "SELECT value, value * 3 FROM range(2000000000)"), RPC)
        reader.read_chunk()  # results are flowing
        running = wait_for(
            lambda: [q for q in json.loads(gw.http_get("/v1/query")[2]) if q["state"] == "RUNNING"], "a running query"
        )
        serving = running[0]["worker"]
        victim = ports.index(int(serving.rsplit(":", 1)[1]))
        procs[victim].kill()
        procs[victim].wait(timeout=10)
        # The client sees UNAVAILABLE, never a result that ends cleanly.
        with pytest.raises(flight.FlightUnavailableError) as err:
            while True:
                reader.read_chunk()
        assert serving.split("://")[1] in str(err.value), str(err.value)

        # The dead worker is ejected; queries keep working on the other.
        wait_for(lambda: worker_states(gw)[serving] == "EJECTED", "ejection")
        for _ in range(5):
            table = client.do_get(statement_ticket(client, "SELECT * FROM nation"), RPC).read_all()
            assert table.num_rows == 25
        # Restarted where it was: re-admitted.
        procs[victim] = start_worker(quiver_binary, tmp_path, ports[victim])
        wait_for(lambda: worker_states(gw)[serving] == "HEALTHY", "re-admission")
        client.close()
    finally:
        gw.stop()


def test_sigterm_lets_a_stream_in_flight_finish_and_refuses_new_queries(tmp_path, quiver_binary, two_workers):
    ports, _ = two_workers
    config = pool_gateway(tmp_path, ports, extra_server="shutdown_grace_secs = 60")
    gw = start_gateway("sigterm-gateway", ["serve", "--config", str(config)], tmp_path / "gw")
    client = flight.FlightClient(gw.flight_location)
    total = 3_000_000
    reader = client.do_get(statement_ticket(client, f"SELECT value FROM range({total})"), RPC)
    rows = reader.read_chunk().data.num_rows
    gw.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: gw.http_get("/health/ready")[0] == 503, "readiness to turn false")
    other = flight.FlightClient(gw.flight_location)
    with pytest.raises(flight.FlightUnavailableError, match="shutting down"):
        statement_ticket(other, "SELECT 1")
    rows += reader.read_all().num_rows
    assert rows == total
    assert gw.proc.wait(timeout=30) == 0
    client.close()
    other.close()


def test_metrics_parse_with_the_prometheus_parser(gateway, alice):
    client = flight.FlightClient(gateway.flight_location)
    token = client.authenticate_basic_token(*alice)
    options = flight.FlightCallOptions(headers=[token], timeout=60)
    client.do_get(statement_ticket(client, "SELECT * FROM region", options), options).read_all()
    status, headers, body = gateway.http_get("/metrics", headers={"Authorization": token[1].decode()})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text"), headers
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in ["quiver_auth_attempts", "quiver_queries", "quiver_query_duration_seconds", "quiver_streamed_bytes"]:
        assert name in families, sorted(families)
    assert families["quiver_query_duration_seconds"].type == "histogram"
    assert families["quiver_queries"].type == "counter"
    finished = [s for s in families["quiver_queries"].samples if s.labels.get("state") == "finished"]
    assert finished and finished[0].value >= 1, finished
    client.close()

