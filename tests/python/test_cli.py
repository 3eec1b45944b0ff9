"""The `quiver` binary's other commands: check-config and a standalone engine worker."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess

import pyarrow.flight as flight


def test_check_config_accepts_the_example_and_names_each_problem(quiver_binary, tmp_path):
    ok = subprocess.run([quiver_binary, "check-config", str(pathlib.Path(__file__).resolve().parents[2] / "conf" / "quiver.toml")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[server]\nflight_addr = "0.0.0.0:8815"\nmax_sql_size = "huge"\n'
        '[[pools]]\nname = "p"\nworkers = ["http://worker:1"]\n'
    )
    out = subprocess.run([quiver_binary, "check-config", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    # One problem per line: file: key: reason.
    keys = [line.split(": ")[1] for line in lines]
    assert keys == ["server.max_sql_size", "auth.methods", "pools[0].workers[0]"], lines
    assert all(line.startswith(f"{bad}: ") for line in lines), lines
    assert "0.0.0.0:8815" in out.stdout and "loopback" in out.stdout

    typo = tmp_path / "typo.toml"
    typo.write_text('[auth]\nmethods = ["open"]\npasword_file = "x"\n')
    out = subprocess.run([quiver_binary, "check-config", str(typo)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "line 3" in out.stderr and "pasword_file" in out.stderr, out.stderr


def test_standalone_engine_worker_serves_flight_sql(quiver_binary, tmp_path):
    cfg = tmp_path / "worker.toml"
    cfg.write_text('[engine]\n[[engine.catalogs]]\nkind = "memory"\nname = "scratch"\n')
    proc = subprocess.Popen(
        [quiver_binary, "engine", "--config", str(cfg), "--flight-addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        event = json.loads(line)
        assert event["event"] == "ready", line
        host, port = event["flight_addr"].rsplit(":", 1)
        assert host == "127.0.0.1"
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        actions = [a.type for a in client.list_actions()]
        assert "CreatePreparedStatement" in actions
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
