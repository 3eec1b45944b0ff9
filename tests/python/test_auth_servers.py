"""Authentication against real servers started by the test: an MIT Kerberos KDC
(tests/servers/kdc.sh), OpenLDAP slapd (tests/servers/slapd.sh) and a JWKS/OIDC endpoint
served here, with the real ADBC driver, pyarrow.flight and HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import os
import pathlib
import subprocess
import sys
from typing import Dict, List, Optional

import pyarrow.flight as flight
import pytest

from conftest import LOOPBACK, _toml_str, start_gateway

pytestmark = pytest.mark.adbc

REPO = pathlib.Path(__file__).resolve().parents[2]
SERVERS = REPO / "tests" / "servers"


def read_env(path: pathlib.Path) -> Dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def claims_of(bearer: str) -> dict:
    token = bearer.split(" ", 1)[1] if " " in bearer else bearer
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class HeaderCapture(flight.ClientMiddlewareFactory):
    """Records the response headers of every call (pyarrow hides them otherwise)."""

    def __init__(self) -> None:
        self.headers: List[dict] = []

    def start_call(self, info):
        factory = self

        class Middleware(flight.ClientMiddleware):
            def received_headers(self, headers):
                factory.headers.append({k.lower(): v for k, v in headers.items()})

        return Middleware()


def handshake_with(gateway, authorization: str):
    """A Handshake with the given `authorization` header; returns (issued bearer, www-authenticate)."""
    capture = HeaderCapture()
    client = flight.FlightClient(gateway.flight_location, middleware=[capture])
    try:
        options = flight.FlightCallOptions(headers=[(b"authorization", authorization.encode())], timeout=60)
        # Any call runs the auth layer; ListActions is cheap and needs no Flight SQL command.
        list(client.list_actions(options))
    finally:
        client.close()
    merged: Dict[str, list] = {}
    for h in capture.headers:
        for k, v in h.items():
            merged.setdefault(k, []).extend(v if isinstance(v, list) else [v])
    bearer = next((v for v in merged.get("authorization", []) if v.startswith("Bearer ")), None)
    negotiate = next((v for v in merged.get("www-authenticate", []) if v.startswith("Negotiate ")), None)
    return bearer, negotiate


def http_get(gateway, path: str, headers: dict):
    conn = http.client.HTTPConnection(LOOPBACK, gateway.http_port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# Kerberos


@pytest.fixture(scope="module")
def kdc(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kdc")
    out = subprocess.run(
        ["bash", str(SERVERS / "kdc.sh"), "start", str(workdir)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"kdc.sh start failed:\n{out.stdout}\n{out.stderr}"
    env = read_env(workdir / "env")
    env["DIR"] = str(workdir)
    ccache = workdir / "alice.ccache"
    out = subprocess.run(
        ["bash", str(SERVERS / "kdc.sh"), "kinit", str(workdir), "alice", str(ccache)],
        input=env["ALICE_PASSWORD"] + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"kinit failed:\n{out.stdout}\n{out.stderr}"
    env["CCACHE"] = str(ccache)
    yield env
    subprocess.run(["bash", str(SERVERS / "kdc.sh"), "stop", str(workdir)], timeout=60)


def negotiate_token(kdc: dict, *extra: str) -> str:
    env = dict(os.environ, KRB5_CONFIG=kdc["KRB5_CONFIG"], KRB5CCNAME="FILE:" + kdc["CCACHE"])
    out = subprocess.run(
        [sys.executable, str(SERVERS / "negotiate_token.py"), *extra], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, f"negotiate_token.py {extra}: {out.stdout}\n{out.stderr}"
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def kerberos_gateway(kdc, tmp_path_factory, quiver_binary):
    workdir = tmp_path_factory.mktemp("kerberos-gateway")
    config = workdir / "quiver.toml"
    config.write_text(
        f"""\
[server]
flight_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"

[auth]
methods = ["kerberos"]

[auth.kerberos]
service_name = "HTTP"
keytab = {_toml_str(kdc["KRB5_KEYTAB"])}
krb5_config = {_toml_str(kdc["KRB5_CONFIG"])}

[[auth.user_mapping]]
pattern = '(.*)@QUIVER\\.TEST'

[session]
default_catalog = "tpch"
default_schema = "tiny"

[[pools]]
name = "default"
embedded = true

[[engine.catalogs]]
kind = "tpch"
name = "tpch"
scale_factor = 0.01
"""
    )
    # The replay cache stays in the KDC's directory. KRB5_KTNAME/KRB5_CONFIG are *not* passed:
    # the gateway sets them itself from [auth.kerberos] (it re-executes with them).
    env = {"KRB5RCACHEDIR": kdc["KRB5RCACHEDIR"]}
    gw = start_gateway("kerberos-gateway", ["serve", "--config", str(config)], workdir, extra_env=env)
    yield gw
    gw.stop()


def test_kerberos_negotiate_on_flight_issues_a_token_and_a_mutual_auth_reply(kdc, kerberos_gateway):
    bearer, negotiate = handshake_with(kerberos_gateway, "Negotiate " + negotiate_token(kdc))
    assert bearer is not None, "no session token after a Kerberos login"
    claims = claims_of(bearer)
    assert claims["u"] == "alice" and claims["m"] == "kerberos", claims
    assert negotiate is not None and len(negotiate) > len("Negotiate ") + 20, negotiate


def test_kerberos_adbc_adopts_the_session_token(kdc, kerberos_gateway):
    # ADBC sends the Negotiate header on its first call and then the gateway's bearer token;
    # a second use of the same Kerberos token would be refused as a replay.
    header = "Negotiate " + negotiate_token(kdc)
    with kerberos_gateway.adbc(**{"adbc.flight.sql.authorization_header": header}) as conn:
        with conn.cursor() as cur:
            for _ in range(3):
                cur.execute("SELECT count(*) FROM region")
                assert cur.fetchone() == (5,)


def test_kerberos_replayed_and_garbage_tokens_are_unauthenticated(kdc, kerberos_gateway):
    token = negotiate_token(kdc)
    bearer, _ = handshake_with(kerberos_gateway, "Negotiate " + token)
    assert bearer is not None
    for bad in [token, base64.b64encode(b"\x60\x82garbage" * 10).decode(), "AAAA"]:
        with pytest.raises(flight.FlightUnauthenticatedError):
            handshake_with(kerberos_gateway, "Negotiate " + bad)


def test_kerberos_on_the_http_api_with_mutual_authentication(kdc, kerberos_gateway):
    url = f"http://{LOOPBACK}:{kerberos_gateway.http_port}/v1/whoami"
    env = dict(os.environ, KRB5_CONFIG=kdc["KRB5_CONFIG"], KRB5CCNAME="FILE:" + kdc["CCACHE"])
    # negotiate_token.py --url checks that the server's reply token completes the context.
    out = subprocess.run(
        [sys.executable, str(SERVERS / "negotiate_token.py"), "--url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status 200" in out.stdout, out.stdout
    status, headers, body = http_get(kerberos_gateway, "/v1/whoami", {"Authorization": "Negotiate " + negotiate_token(kdc)})
    assert status == 200 and json.loads(body) == {"user": "alice", "groups": [], "method": "kerberos"}, body
    status, headers, _ = http_get(kerberos_gateway, "/v1/whoami", {})
    assert status == 401 and "negotiate" in headers.get("www-authenticate", "").lower(), headers
