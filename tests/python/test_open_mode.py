"""The zero-config embedded default: `quiver serve --flight-addr 127.0.0.1:0 --http-addr 127.0.0.1:0`.

Mirrors the README quick start: open auth (any user name, no password, loopback only) and the
built-in TPC-H data as the default catalog/schema.
"""

from __future__ import annotations

import json
import socket
import time

import pytest


def test_ready_line(open_gateway):
    ev = open_gateway.ready_event
    assert ev["event"] == "ready"
    assert open_gateway.flight_port != open_gateway.http_port, ev


@pytest.mark.adbc
def test_readme_snippet_no_credentials(open_gateway):
    # README: connect with no credentials and count the nations.
    with open_gateway.adbc() as conn:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM nation")
        assert cur.fetchone() == (25,)
        cur.close()


@pytest.mark.adbc
def test_any_user_name_without_password(open_gateway):
    with open_gateway.adbc("carol", "") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT n_name FROM nation WHERE n_nationkey = ?", (7,))
            assert cur.fetchall() == [("GERMANY",)]


def test_health(open_gateway):
    status, _, body = open_gateway.http_get("/health")
    assert status == 200, f"/health returned {status}: {body[:200]!r}"


def test_info(open_gateway):
    status, headers, body = open_gateway.http_get("/v1/info")
    assert status == 200, f"/v1/info returned {status}: {body[:200]!r}"
    assert "json" in headers.get("content-type", ""), headers
    info = json.loads(body)
    assert isinstance(info.get("version"), str) and info["version"], info


def test_unknown_http_path_is_404(open_gateway):
    status, _, _ = open_gateway.http_get("/no/such/path")
    assert status == 404, status


def test_password_gateway_health_needs_no_auth(gateway):
    status, _, body = gateway.http_get("/health")
    assert status == 200, f"/health returned {status}: {body[:200]!r}"


@pytest.mark.adbc
def test_sigterm_stops_gateway(launch_gateway):
    gw = launch_gateway("sigterm-gateway", ["serve", "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
    with gw.adbc() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]
    t0 = time.monotonic()
    code = gw.stop(timeout=20)
    elapsed = time.monotonic() - t0
    assert elapsed < 20, f"gateway took {elapsed:.1f} s to stop after SIGTERM (then SIGKILLed)"
    assert code in (0, -15), f"unexpected exit code {code} after SIGTERM; stderr:\n{gw.stderr_tail()}"
    for port in (gw.flight_port, gw.http_port):
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still accepts connections after exit"
