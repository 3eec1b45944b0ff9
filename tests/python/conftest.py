"""Fixtures for the real-client end-to-end tests.

Each fixture starts a real `quiver serve` process (the binary named by $QUIVER_BIN),
waits for its one-line JSON ready event on stdout, and stops it with SIGTERM at the end
of the session. Everything listens on 127.0.0.1 with ports chosen by the OS (port 0);
tests only ever use the ports printed in the ready line.
"""

from __future__ import annotations

import ctypes
import dataclasses
import http.client
import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import pytest

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
LOOPBACK = "127.0.0.1"

# Users of the password-file gateway: name -> (password, groups)
USERS: Dict[str, tuple] = {
    "alice": ("alice-secret", ["analysts"]),
    "bob": ("bob-secret", []),
}

# gRPC (C++ in pyarrow, Go in ADBC) and urllib honour *_proxy variables; never send
# loopback traffic through a proxy.
for _var in ("no_proxy", "NO_PROXY", "no_grpc_proxy"):
    _cur = os.environ.get(_var, "")
    _parts = [p for p in _cur.split(",") if p]
    for _h in ("127.0.0.1", "localhost"):
        if _h not in _parts:
            _parts.append(_h)
    os.environ[_var] = ",".join(_parts)


# --------------------------------------------------------------------------------------
# Locating the binary


def quiver_bin() -> str:
    """Path of the `quiver` binary under test ($QUIVER_BIN, else the usual cargo outputs)."""
    env = os.environ.get("QUIVER_BIN")
    if env:
        if not os.access(env, os.X_OK):
            pytest.fail(f"QUIVER_BIN={env!r} is not an executable file", pytrace=False)
        return env
    repo = pathlib.Path(__file__).resolve().parents[2]
    candidates = []
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(pathlib.Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "quiver")
    candidates.append(pathlib.Path.home() / ".cache" / "quiver" / "target" / "debug" / "quiver")
    candidates.append(repo / "target" / "debug" / "quiver")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    pytest.fail(
        "QUIVER_BIN is not set and no built `quiver` binary was found "
        f"(looked in: {', '.join(map(str, candidates))}). Run scripts/test, or "
        "`cargo build --bin quiver` and export QUIVER_BIN.",
        pytrace=False,
    )


def hash_password(binary: str, password: str) -> str:
    """Hash a password with `quiver hash-password` (password on stdin, PHC hash on stdout)."""
    try:
        proc = subprocess.run(
            [binary, "hash-password"],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("`quiver hash-password` did not finish within 60 s", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"`quiver hash-password` exited with {proc.returncode}; stderr:\n{proc.stderr}",
            pytrace=False,
        )
    lines = [l.strip() for l in proc.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"`quiver hash-password` should print exactly one line, got {proc.stdout!r}"
    hashed = lines[0]
    assert hashed.startswith("$argon2"), f"expected an argon2 PHC string, got {hashed!r}"
    assert password not in hashed, "the hash must not contain the plain password"
    return hashed


# --------------------------------------------------------------------------------------
# Running a gateway


@dataclasses.dataclass
class Gateway:
    name: str
    proc: subprocess.Popen
    flight_addr: str
    http_addr: str
    stderr_path: pathlib.Path
    workdir: pathlib.Path
    ready_event: dict
    stdout_lines: List[str]

    @property
    def flight_port(self) -> int:
        return int(self.flight_addr.rsplit(":", 1)[1])

    @property
    def http_port(self) -> int:
        return int(self.http_addr.rsplit(":", 1)[1])

    @property
    def flight_uri(self) -> str:
        """URI for ADBC (grpc:// = plaintext)."""
        return f"grpc://{LOOPBACK}:{self.flight_port}"

    @property
    def flight_location(self) -> str:
        """Location for pyarrow.flight (grpc+tcp:// = plaintext)."""
        return f"grpc+tcp://{LOOPBACK}:{self.flight_port}"

    def stderr_tail(self, max_bytes: int = 6000) -> str:
        try:
            data = self.stderr_path.read_bytes()
        except OSError as e:  # pragma: no cover - diagnostics only
            return f"<could not read {self.stderr_path}: {e}>"
        if len(data) > max_bytes:
            data = b"...\n" + data[-max_bytes:]
        return data.decode("utf-8", "replace")

    def http_get(self, path: str, timeout: float = 10.0, headers: Optional[Dict[str, str]] = None):
        """GET http://127.0.0.1:HTTP_PORT{path} -> (status, headers dict, body bytes). No proxies."""
        conn = http.client.HTTPConnection(LOOPBACK, self.http_port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()

    def adbc(self, user: Optional[str] = None, password: Optional[str] = None, **db_kwargs):
        """Open an ADBC Flight SQL DB-API connection (adbc_driver_flightsql.dbapi) to this gateway.

        username/password (if given) make the driver do a Basic-auth Handshake; extra db_kwargs
        are ADBC database options. RPC timeouts are set so a stuck gateway fails a test instead
        of hanging the run.
        """
        return adbc_connect(self.flight_uri, user, password, **db_kwargs)

    def is_running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> Optional[int]:
        """SIGTERM, wait, then SIGKILL as a last resort. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


_RUNNING: List[Gateway] = []


# --------------------------------------------------------------------------------------
# ADBC connections, and containment of Go driver panics.
#
# The ADBC Flight SQL driver is Go code inside this Python process. If the server sends
# something it does not expect (e.g. a metadata result whose Arrow schema differs from the
# Flight SQL reference), the driver panics, and from then on every ADBC call in this process
# fails with "Go panicked, driver is in unknown state"; garbage-collecting a connection
# afterwards can even segfault the interpreter. So: the first panic is reported at once and
# with its text, the remaining ADBC tests are skipped with a pointer to it, no ADBC connection
# is ever garbage-collected during the run, and after a panic the process leaves with
# os._exit() once the reports are written.

ADBC_RPC_TIMEOUT_S = "120"
_ADBC_KEEPALIVE: list = []
_ADBC_PANIC: Dict[str, str] = {}
_EXIT_STATUS: Dict[str, int] = {}


def adbc_connect(uri: str, user: Optional[str] = None, password: Optional[str] = None, **db_kwargs):
    import warnings

    import adbc_driver_flightsql
    import adbc_driver_flightsql.dbapi
    import adbc_driver_manager.dbapi

    opts = adbc_driver_flightsql.DatabaseOptions
    kwargs = {
        opts.TIMEOUT_QUERY.value: ADBC_RPC_TIMEOUT_S,
        opts.TIMEOUT_FETCH.value: ADBC_RPC_TIMEOUT_S,
        opts.TIMEOUT_UPDATE.value: ADBC_RPC_TIMEOUT_S,
    }
    if user is not None:
        kwargs["username"] = user
        kwargs["password"] = password if password is not None else ""
    kwargs.update(db_kwargs)
    with warnings.catch_warnings():
        # "Cannot disable autocommit" is expected while the gateway has no transactions.
        warnings.simplefilter("ignore", adbc_driver_manager.dbapi.Warning)
        conn = adbc_driver_flightsql.dbapi.connect(uri, db_kwargs=kwargs)
    _ADBC_KEEPALIVE.append(conn)
    return conn


def _looks_like_go_panic(text: str) -> bool:
    return "Go panic" in text or "driver panicked" in text or "panicked, driver is in unknown state" in text


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGTERM the gateway if pytest dies (Linux PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except Exception:
        pass


def _parse_addr(event: dict, key: str) -> str:
    addr = event.get(key)
    assert isinstance(addr, str), f"ready line lacks a string {key!r}: {event!r}"
    host, _, port = addr.rpartition(":")
    assert host == LOOPBACK, f"{key} should be on {LOOPBACK}, got {addr!r}"
    assert port.isdigit() and 0 < int(port) < 65536, f"{key} has no real port: {addr!r}"
    return addr


def start_gateway(
    name: str,
    args: List[str],
    workdir: pathlib.Path,
    timeout: float = READY_TIMEOUT_S,
    extra_env: Optional[Dict[str, str]] = None,
) -> Gateway:
    """Start `quiver <args>` and wait for its ready line. Fails the test with stderr on trouble."""
    binary = quiver_bin()
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_path = workdir / f"{name}.stderr.log"
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    env.update(extra_env or {})
    stderr_file = open(stderr_path, "wb")
    try:
        proc = subprocess.Popen(
            [binary, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            cwd=str(workdir),
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        stderr_file.close()

    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    stdout_lines: List[str] = []

    def pump() -> None:
        # Keep draining stdout for the life of the process so it can never block on a full pipe.
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            stdout_lines.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name=f"{name}-stdout", daemon=True).start()

    cmd = " ".join([binary, *args])
    deadline = time.monotonic() + timeout
    event = None
    while event is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail(
                f"`{cmd}` printed no ready line within {timeout:.0f} s.\n"
                f"stdout so far: {stdout_lines!r}\nstderr:\n{_tail(stderr_path)}",
                pytrace=False,
            )
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:  # stdout closed: the process exited (or closed stdout) before ready
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(timeout=10)
            pytest.fail(
                f"`{cmd}` exited (code {code}) before printing its ready line.\n"
                f"stdout: {stdout_lines!r}\nstderr:\n{_tail(stderr_path)}",
                pytrace=False,
            )
        stripped = line.strip()
        if not stripped.startswith("{"):
            continue  # not our JSON line; the contract says logs go to stderr, but be tolerant
        try:
            candidate = json.loads(stripped)
        except json.JSONDecodeError:
            continue
        if isinstance(candidate, dict) and candidate.get("event") == "ready":
            event = candidate

    try:
        flight_addr = _parse_addr(event, "flight_addr")
        http_addr = _parse_addr(event, "http_addr")
    except AssertionError:
        proc.kill()
        proc.wait(timeout=10)
        raise
    gw = Gateway(
        name=name,
        proc=proc,
        flight_addr=flight_addr,
        http_addr=http_addr,
        stderr_path=stderr_path,
        workdir=workdir,
        ready_event=event,
        stdout_lines=stdout_lines,
    )
    _RUNNING.append(gw)
    return gw


def _tail(path: pathlib.Path, max_bytes: int = 6000) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"<could not read {path}: {e}>"
    if len(data) > max_bytes:
        data = b"...\n" + data[-max_bytes:]
    return data.decode("utf-8", "replace") or "<empty>"


def _toml_str(s: str) -> str:
    # TOML basic strings accept JSON string escapes for everything json.dumps emits here.
    return json.dumps(s)


def write_password_file(path: pathlib.Path, binary: str) -> None:
    lines = []
    for user, (password, groups) in USERS.items():
        hashed = hash_password(binary, password)
        lines.append(f"{user}:{hashed}:{','.join(groups)}" if groups else f"{user}:{hashed}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def write_config(path: pathlib.Path, password_file: pathlib.Path) -> None:
    path.write_text(
        f"""\
[server]
flight_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"

[auth]
methods = ["password-file"]
password_file = {_toml_str(str(password_file))}

[session]
default_catalog = "tpch"
default_schema = "tiny"

[[pools]]
name = "default"
embedded = true

[engine]
target_partitions = 2

[[engine.catalogs]]
kind = "tpch"
name = "tpch"
scale_factor = 0.01

[[engine.catalogs]]
kind = "memory"
name = "memory"
"""
    )


# --------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def quiver_binary() -> str:
    return quiver_bin()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, quiver_binary) -> Gateway:
    """Gateway with password-file auth (alice, bob), embedded engine with tpch + memory catalogs."""
    workdir = tmp_path_factory.mktemp("gateway")
    password_file = workdir / "password.db"
    write_password_file(password_file, quiver_binary)
    config = workdir / "quiver.toml"
    write_config(config, password_file)
    gw = start_gateway("gateway", ["serve", "--config", str(config)], workdir)
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def open_gateway(tmp_path_factory, quiver_binary) -> Gateway:
    """The no-config embedded default (open auth), as in the README quick start."""
    workdir = tmp_path_factory.mktemp("open-gateway")
    gw = start_gateway(
        "open-gateway",
        ["serve", "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        workdir,
    )
    yield gw
    gw.stop()


@pytest.fixture
def launch_gateway(tmp_path):
    """Start extra, test-private gateways: launch(name, args) -> Gateway; stopped after the test."""
    started: List[Gateway] = []

    def launch(name: str, args: List[str], extra_env: Optional[Dict[str, str]] = None) -> Gateway:
        gw = start_gateway(name, args, tmp_path / name, extra_env=extra_env)
        started.append(gw)
        return gw

    yield launch
    for gw in started:
        gw.stop(timeout=5)
        if gw in _RUNNING:
            _RUNNING.remove(gw)


@pytest.fixture(scope="session")
def alice() -> tuple:
    return "alice", USERS["alice"][0]


@pytest.fixture(scope="session")
def bob() -> tuple:
    return "bob", USERS["bob"][0]


# --------------------------------------------------------------------------------------
# Diagnostics: attach the gateways' recent stderr to every failing test's report.


@pytest.fixture(autouse=True)
def _skip_adbc_after_go_panic(request):
    if _ADBC_PANIC and request.node.get_closest_marker("adbc"):
        pytest.skip(
            f"the ADBC Go driver panicked in {_ADBC_PANIC['test']} and is unusable for the rest of "
            "this process (see that test's failure)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and not _ADBC_PANIC:
        text = report.longreprtext + "\n" + report.capstderr
        if _looks_like_go_panic(text):
            _ADBC_PANIC["test"] = item.nodeid
            tr = item.config.pluginmanager.get_plugin("terminalreporter")
            msg = (
                f"\n!!! ADBC Go driver panic in {item.nodeid} ({report.when}); later ADBC tests will be skipped.\n"
                + report.longreprtext[-4000:]
                + ("\n--- captured stderr (tail) ---\n" + report.capstderr[-4000:] if report.capstderr else "")
            )
            if tr is not None:
                tr.write_line(msg)
            else:
                print(msg, file=sys.stderr)
    if report.failed and _RUNNING:
        for gw in _RUNNING:
            state = "running" if gw.is_running() else f"EXITED with {gw.proc.returncode}"
            report.sections.append(
                (f"{gw.name} stderr (process {state}; full log: {gw.stderr_path})", gw.stderr_tail(3000))
            )


def pytest_configure(config):
    config.addinivalue_line("markers", "adbc: uses the ADBC Flight SQL driver (skipped after a Go driver panic)")


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["status"] = int(exitstatus)
    # Safety net: never leave a gateway behind (e.g. after an interrupted session).
    for gw in list(_RUNNING):
        try:
            gw.stop(timeout=5)
        except Exception as e:  # pragma: no cover
            print(f"could not stop {gw.name}: {e}", file=sys.stderr)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _ADBC_PANIC:
        # Closing/collecting connections of a panicked Go driver can segfault: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS.get("status", 1) or 1)
