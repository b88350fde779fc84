"""``tinystack up``, ``down`` and ``status`` as a person runs them.

Each test starts the real command in a subprocess and checks what a person
sees: the printed URL and clouds, the status table, the refusals, and that
stopping leaves nothing behind (the launcher checks that after every test).
"""

from __future__ import annotations

import json
import signal
import socket
import time

from tinystack.runner import pid_alive, read_pid


def test_up_detached_prints_url_and_clouds(tinystack_up):
    out = tinystack_up.output
    assert tinystack_up.url in out
    for cloud in ("tinystack", "tinystack-admin", "tinystack-alt"):
        assert f" {cloud} " in out
    assert "openstack --os-cloud tinystack-admin token issue" in out
    assert str(tinystack_up.data_dir / "openrc") in out
    status, body = tinystack_up.health()
    assert status == 200
    assert body["node"]


def test_printed_command_works(tinystack_up):
    result = tinystack_up.openstack("token", "issue", "-f", "json")
    assert json.loads(result.stdout)["id"]


def test_status_shows_identity_healthy(tinystack_up):
    table = tinystack_up.cli("status").stdout
    (row,) = [line for line in table.splitlines() if " identity " in line]
    assert "api" in row and "yes" in row

    body = json.loads(tinystack_up.cli("status", "--json").stdout)
    (identity,) = [s for s in body["services"] if s["name"] == "identity"]
    assert identity["healthy"] is True
    assert identity["kind"] == "api"


def test_second_up_on_same_data_dir_is_refused(tinystack_up):
    other_port = socket.socket()
    other_port.bind(("127.0.0.1", 0))
    port = other_port.getsockname()[1]
    other_port.close()

    result = tinystack_up.cli("up", "-d", "--data-dir", str(tinystack_up.data_dir),
                              "--port", str(port), check=False)

    assert result.returncode == 1
    assert "already running" in result.stderr
    assert f"pid {tinystack_up.pid}" in result.stderr
    assert "tinystack down" in result.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert tinystack_up.health()[0] == 200


def test_up_on_a_taken_port_is_refused(launch_tinystack):
    ts = launch_tinystack.prepare()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ts.port))
        squatter.listen()
        result = ts.cli("up", "-d", "--data-dir", str(ts.data_dir), "--port", str(ts.port),
                        check=False)

    assert result.returncode == 1
    assert f"port {ts.port}" in result.stderr and "in use" in result.stderr
    assert not ts.pid_file.exists()


def test_down_stops_it_and_leaves_nothing(launch_tinystack):
    ts = launch_tinystack.start()
    assert ts.pid is not None and pid_alive(ts.pid)

    result = ts.cli("down")

    assert f"stopped (pid {ts.pid})" in result.stdout
    assert not pid_alive(ts.pid)
    assert not ts.answers()
    assert not ts.pid_file.exists()
    assert ts.leftovers() == []
    assert "not running" in ts.cli("down").stdout
    status = ts.cli("status", check=False)
    assert status.returncode == 1
    assert "not running" in status.stderr


def test_second_start_is_fast(launch_tinystack):
    ts = launch_tinystack.start()
    ts.cli("down")

    started = time.monotonic()
    ts.cli("up", "-d", "--data-dir", str(ts.data_dir), "--port", str(ts.port))
    elapsed = time.monotonic() - started
    ts.pid = read_pid(ts.pid_file)

    assert ts.health()[0] == 200
    # The target is well under 3 s (about 1.2 s on a quiet machine); the bound
    # leaves room for a loaded one and catches a start that does slow work.
    assert elapsed < 15, f"a second `up -d` took {elapsed:.1f} s"


def test_foreground_up_stops_cleanly_on_sigint(launch_tinystack, tmp_path):
    ts = launch_tinystack.prepare()
    log = tmp_path / "foreground.log"
    with open(log, "wb") as out:
        process = ts.start_foreground(out)
    try:
        ts.wait_until_healthy(process)
        assert read_pid(ts.pid_file) == process.pid

        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert not ts.pid_file.exists()
    assert not ts.answers()
