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


def start_server(script: str, workdir: pathlib.Path) -> Dict[str, str]:
    """`tests/servers/<script> start DIR`; returns DIR/env as a dict (plus DIR)."""
    out = subprocess.run(["bash", str(SERVERS / script), "start", str(workdir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{script} start failed:\n{out.stdout}\n{out.stderr}"
    env = read_env(workdir / "env")
    env["DIR"] = str(workdir)
    return env


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


def write_gateway_config(path: pathlib.Path, auth: str, catalog: str = "tpch") -> pathlib.Path:
    """A gateway config on 127.0.0.1:0 with `auth` (the [auth] tables, TOML) and one embedded
    catalog: `tpch` (tpch.tiny as the default schema) or `memory`."""
    engine = (
        '[session]\ndefault_catalog = "tpch"\ndefault_schema = "tiny"\n\n[[pools]]\nname = "default"\nembedded = true\n\n'
        '[[engine.catalogs]]\nkind = "tpch"\nname = "tpch"\nscale_factor = 0.01\n'
        if catalog == "tpch"
        else '[[pools]]\nname = "default"\nembedded = true\n\n[[engine.catalogs]]\nkind = "memory"\nname = "memory"\n'
    )
    path.write_text(f'[server]\nflight_addr = "127.0.0.1:0"\nhttp_addr = "127.0.0.1:0"\n\n{auth}\n{engine}')
    return path


# --------------------------------------------------------------------------------------
# Kerberos


@pytest.fixture(scope="module")
def kdc(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kdc")
    env = start_server("kdc.sh", workdir)
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
    config = write_gateway_config(
        workdir / "quiver.toml",
        f"""\
[auth]
methods = ["kerberos"]

[auth.kerberos]
service_name = "HTTP"
keytab = {_toml_str(kdc["KRB5_KEYTAB"])}
krb5_config = {_toml_str(kdc["KRB5_CONFIG"])}

[[auth.user_mapping]]
pattern = '(.*)@QUIVER\\.TEST'
""",
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
    status, headers, body = kerberos_gateway.http_get("/v1/whoami", headers={"Authorization": "Negotiate " + negotiate_token(kdc)})
    assert status == 200 and json.loads(body) == {"user": "alice", "groups": [], "method": "kerberos"}, body
    status, headers, _ = kerberos_gateway.http_get("/v1/whoami", headers={})
    assert status == 401 and "negotiate" in headers.get("www-authenticate", "").lower(), headers


# --------------------------------------------------------------------------------------
# LDAP (slapd over ldaps, CA generated at test time) and JWT (a JWKS endpoint served here),
# one gateway with the chain ["ldap", "jwt"].


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slapd")
    env = start_server("slapd.sh", workdir)
    yield env
    subprocess.run(["bash", str(SERVERS / "slapd.sh"), "stop", str(workdir)], timeout=60)


class Idp:
    """A JWKS endpoint on 127.0.0.1:0 with RSA keys generated here; counts its requests."""

    ISSUER = "https://idp.quiver.test"
    AUDIENCE = "quiver"

    def __init__(self) -> None:
        import http.server
        import threading

        from cryptography.hazmat.primitives.asymmetric import rsa

        self.keys = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.hits = 0
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                idp.hits += 1
                body = json.dumps(idp.jwks()).encode()
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/jwks.json"

    def jwks(self) -> dict:
        import jwt

        out = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
            out.append(jwk)
        return {"keys": out}

    def token(self, kid: str = "k1", **overrides) -> str:
        import time

        import jwt

        claims = {
            "iss": self.ISSUER,
            "aud": self.AUDIENCE,
            "sub": "svc-etl",
            "preferred_username": "dana",
            "groups": ["engineers", "etl"],
            "iat": int(time.time()),
            "exp": int(time.time()) + 300,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def idp():
    server = Idp()
    yield server
    server.close()


@pytest.fixture(scope="module")
def directory_gateway(slapd, idp, tmp_path_factory, quiver_binary):
    workdir = tmp_path_factory.mktemp("directory-gateway")
    base = slapd["LDAP_BASE_DN"]
    config = write_gateway_config(
        workdir / "quiver.toml",
        f"""\
[auth]
methods = ["ldap", "jwt"]

[auth.ldap]
url = {_toml_str(slapd["LDAPS_URL"])}
ca_file = {_toml_str(slapd["LDAP_CA_FILE"])}
user_bind_pattern = {_toml_str("uid=${USER},ou=people," + base)}
group_base_dn = {_toml_str("ou=groups," + base)}
group_search_filter = "(&(objectClass=groupOfNames)(member=${{USER_DN}}))"
cache_ttl_secs = 60

[auth.jwt]
jwks_url = {_toml_str(idp.url)}
allow_insecure_http = true
required_issuer = {_toml_str(Idp.ISSUER)}
required_audience = {_toml_str(Idp.AUDIENCE)}
principal_field = ["preferred_username", "sub"]
groups_field = "groups"
""",
    )
    gw = start_gateway("directory-gateway", ["serve", "--config", str(config)], workdir)
    yield gw
    gw.stop()


def test_ldap_adbc_login_with_groups(slapd, directory_gateway):
    with directory_gateway.adbc("alice", slapd["LDAP_ALICE_PASSWORD"]) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM nation")
            assert cur.fetchone() == (25,)
    basic = "Basic " + base64.b64encode(f"alice:{slapd['LDAP_ALICE_PASSWORD']}".encode()).decode()
    status, _, body = directory_gateway.http_get("/v1/whoami", headers={"Authorization": basic})
    assert status == 200, body
    who = json.loads(body)
    assert who["user"] == "alice" and who["method"] == "ldap" and sorted(who["groups"]) == ["analysts", "privacy"]


def test_ldap_user_with_special_characters_logs_in_through_adbc(slapd, directory_gateway):
    with directory_gateway.adbc(slapd["LDAP_OBRIEN_USER"], slapd["LDAP_OBRIEN_PASSWORD"]) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)


@pytest.mark.parametrize(
    "user,password",
    [("alice", "wrong"), ("nobody", "whatever"), ("alice", ""), ("*", "alice-secret"), ("alice)(uid=*", "x")],
)
def test_ldap_bad_logins_are_unauthenticated_with_one_message(slapd, directory_gateway, user, password):
    client = flight.FlightClient(directory_gateway.flight_location)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError) as err:
            client.authenticate_basic_token(user, password)
    finally:
        client.close()
    # The same answer whatever was wrong: no user enumeration, no hint about the directory.
    assert "invalid credentials" in str(err.value), str(err.value)


def test_jwt_bearer_with_adbc_and_the_identity_it_names(idp, directory_gateway):
    token = idp.token()
    with directory_gateway.adbc(**{"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM region")
            assert cur.fetchone() == (5,)
    bearer, _ = handshake_with(directory_gateway, f"Bearer {token}")
    claims = claims_of(bearer)
    assert claims["u"] == "dana" and claims["m"] == "jwt" and claims["g"] == ["engineers", "etl"], claims


@pytest.mark.parametrize(
    "overrides,why",
    [
        ({"aud": "someone-else"}, "wrong audience"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"exp": 1_000_000}, "expired"),
    ],
)
def test_jwt_bad_tokens_are_unauthenticated(idp, directory_gateway, overrides, why):
    with pytest.raises(flight.FlightUnauthenticatedError):
        handshake_with(directory_gateway, f"Bearer {idp.token(**overrides)}")


def test_jwt_key_rotation_is_picked_up_by_one_jwks_refresh(idp, directory_gateway):
    from cryptography.hazmat.primitives.asymmetric import rsa

    handshake_with(directory_gateway, f"Bearer {idp.token()}")  # keys cached
    before = idp.hits
    idp.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bearer, _ = handshake_with(directory_gateway, f"Bearer {idp.token(kid='k2')}")
    assert claims_of(bearer)["u"] == "dana"
    assert idp.hits == before + 1, (before, idp.hits)
    # A token signed by a key the IdP never published: refused, and no second fetch within
    # the cooldown.
    rogue = Idp()
    rogue.keys["k3"] = rogue.keys.pop("k1")
    try:
        with pytest.raises(flight.FlightUnauthenticatedError):
            handshake_with(directory_gateway, f"Bearer {rogue.token(kid='k3')}")
        with pytest.raises(flight.FlightUnauthenticatedError):
            handshake_with(directory_gateway, f"Bearer {rogue.token(kid='k3')}")
    finally:
        rogue.close()
    assert idp.hits == before + 1, (before, idp.hits)


def test_ldap_down_is_unavailable_and_cached_logins_survive(tmp_path, quiver_binary):
    env = start_server("slapd.sh", tmp_path / "slapd")
    config = write_gateway_config(
        tmp_path / "quiver.toml",
        f"""\
[auth]
methods = ["ldap"]
[auth.ldap]
url = {_toml_str(env["LDAPS_URL"])}
ca_file = {_toml_str(env["LDAP_CA_FILE"])}
user_bind_pattern = {_toml_str("uid=${USER},ou=people," + env["LDAP_BASE_DN"])}
connect_timeout_secs = 2
read_timeout_secs = 2
""",
        catalog="memory",
    )
    gw = start_gateway("ldap-down-gateway", ["serve", "--config", str(config)], tmp_path / "gw")
    try:
        def login(user, password):
            client = flight.FlightClient(gw.flight_location)
            try:
                return client.authenticate_basic_token(user, password)
            finally:
                client.close()

        assert login("alice", env["LDAP_ALICE_PASSWORD"])[1].startswith(b"Bearer ")
        subprocess.run(["bash", str(SERVERS / "slapd.sh"), "stop", str(tmp_path / "slapd")], timeout=60)
        # Within cache_ttl_secs the same user and password log in without the directory...
        assert login("alice", env["LDAP_ALICE_PASSWORD"])[1].startswith(b"Bearer ")
        # ...a wrong password is never served from the cache, and anyone else needs the server.
        with pytest.raises(flight.FlightUnavailableError) as err:
            login("bob", env["LDAP_BOB_PASSWORD"])
        assert "LDAP server" in str(err.value), str(err.value)
        with pytest.raises((flight.FlightUnavailableError, flight.FlightUnauthenticatedError)):
            login("alice", "wrong")
        assert gw.is_running()
    finally:
        gw.stop()
        subprocess.run(["bash", str(SERVERS / "slapd.sh"), "stop", str(tmp_path / "slapd")], timeout=60)


# --------------------------------------------------------------------------------------
# mTLS: certificates generated here with `cryptography`; the real ADBC driver presents one.


def _pki(workdir: pathlib.Path) -> dict:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def issue(cn, issuer_name, issuer_key, *, ca=False, sans=(), usage=None, key=None):
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return cert, key

    import ipaddress

    ca_cert, ca_key = issue("quiver test CA", None, None, ca=True)
    server_cert, server_key = issue(
        "quiver", ca_cert.subject, ca_key, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_cert, client_key = issue(
        "carol", ca_cert.subject, ca_key, sans=[x509.RFC822Name("carol@corp.example")],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    rogue_ca, rogue_key = issue("rogue CA", None, None, ca=True)
    rogue_cert, rogue_client_key = issue("carol", rogue_ca.subject, rogue_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    files = {
        "ca": pem(ca_cert), "server_cert": pem(server_cert), "server_key": pem_key(server_key),
        "client_cert": pem(client_cert), "client_key": pem_key(client_key),
        "rogue_cert": pem(rogue_cert), "rogue_key": pem_key(rogue_client_key),
    }
    out = {}
    for name, data in files.items():
        path = workdir / f"{name}.pem"
        path.write_bytes(data)
        out[name] = path
    return out


def test_mtls_adbc_client_certificate_names_the_user(tmp_path, quiver_binary):
    pki = _pki(tmp_path)
    config = write_gateway_config(
        tmp_path / "quiver.toml",
        f"""\
[auth]
methods = ["certificate"]
[auth.certificate]
user_field = "san_email"
[[auth.user_mapping]]
pattern = '(.*)@corp\\.example'
""",
    )
    # [server.tls] extends the [server] table written above.
    config.write_text(
        config.read_text()
        + f"""
[server.tls]
cert_file = {_toml_str(str(pki["server_cert"]))}
key_file = {_toml_str(str(pki["server_key"]))}
client_ca_file = {_toml_str(str(pki["ca"]))}
client_auth = "required"
"""
    )
    gw = start_gateway("mtls-gateway", ["serve", "--config", str(config)], tmp_path / "gw")
    uri = f"grpc+tls://{LOOPBACK}:{gw.flight_port}"
    try:
        from conftest import adbc_connect

        tls = {"adbc.flight.sql.client_option.tls_root_certs": pki["ca"].read_text()}
        with adbc_connect(
            uri,
            **tls,
            **{
                "adbc.flight.sql.client_option.mtls_cert_chain": pki["client_cert"].read_text(),
                "adbc.flight.sql.client_option.mtls_private_key": pki["client_key"].read_text(),
            },
        ) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM tpch.tiny.nation")
                assert cur.fetchone() == (25,)

        # pyarrow with the same certificate and no `authorization` header: the certificate
        # speaks, and the session token issued in reply names carol.
        capture = HeaderCapture()
        client = flight.FlightClient(
            f"grpc+tls://{LOOPBACK}:{gw.flight_port}",
            tls_root_certs=pki["ca"].read_bytes(),
            cert_chain=pki["client_cert"].read_bytes(),
            private_key=pki["client_key"].read_bytes(),
            middleware=[capture],
        )
        try:
            list(client.list_actions(flight.FlightCallOptions(timeout=30)))
        finally:
            client.close()
        bearer = next(h["authorization"] for h in capture.headers if "authorization" in h)
        bearer = bearer[0] if isinstance(bearer, list) else bearer
        assert claims_of(bearer)["u"] == "carol" and claims_of(bearer)["m"] == "certificate", claims_of(bearer)

        # A certificate from another CA, or none at all: no connection is served.
        for extra in [
            {
                "adbc.flight.sql.client_option.mtls_cert_chain": pki["rogue_cert"].read_text(),
                "adbc.flight.sql.client_option.mtls_private_key": pki["rogue_key"].read_text(),
            },
            {},
        ]:
            with pytest.raises(Exception):
                with adbc_connect(uri, **tls, **extra) as conn:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
        assert gw.is_running()
    finally:
        gw.stop()

