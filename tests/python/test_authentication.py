"""Authentication with the real clients: bearer tokens through ADBC, the HTTP API behind the
same chain. (LDAP, Kerberos and JWT against real servers are in test_auth_servers.py.)"""

from __future__ import annotations

import base64
import json

import pyarrow.flight as flight
import pytest

pytestmark = pytest.mark.adbc


def _token_via_pyarrow(gateway, user: str, password: str) -> bytes:
    client = flight.FlightClient(gateway.flight_location)
    try:
        key, value = client.authenticate_basic_token(user, password)
    finally:
        client.close()
    assert key.lower() == b"authorization" and value.startswith(b"Bearer qv1."), (key, value)
    return value


def test_adbc_connects_with_a_bearer_token(gateway, alice):
    token = _token_via_pyarrow(gateway, *alice).decode()
    with gateway.adbc(**{"adbc.flight.sql.authorization_header": token}) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM nation")
            assert cur.fetchone() == (25,)


def test_adbc_with_a_forged_token_is_unauthenticated(gateway, alice):
    token = _token_via_pyarrow(gateway, *alice).decode()
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(Exception) as err:
        with gateway.adbc(**{"adbc.flight.sql.authorization_header": forged}) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
    text = str(err.value)
    assert "UNAUTHENTICATED" in text.upper() or "Unauthenticated" in text, text


def test_http_api_accepts_basic_and_the_flight_token(gateway, alice, bob):
    status, headers, _ = gateway.http_get("/v1/whoami", headers={})
    assert status == 401 and "basic" in headers.get("www-authenticate", "").lower()
    basic = "Basic " + base64.b64encode(f"{alice[0]}:{alice[1]}".encode()).decode()
    status, _, body = gateway.http_get("/v1/whoami", headers={"Authorization": basic})
    assert status == 200 and json.loads(body)["user"] == "alice", body
    token = _token_via_pyarrow(gateway, *bob).decode()
    status, _, body = gateway.http_get("/v1/whoami", headers={"Authorization": token})
    assert status == 200 and json.loads(body)["user"] == "bob", body
    status, _, body = gateway.http_get("/metrics", headers={"Authorization": token})
    assert status == 200 and b"quiver_auth_attempts_total" in body
