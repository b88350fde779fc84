"""The ``tinystack`` command's parsing and the runner's process bookkeeping.

Starting the cloud for real is ``tests/e2e/test_runner.py``; here is what can
be checked without it: flags, pid files, liveness, refusals.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tinystack import cli, runner
from tinystack.config import load


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("TINYSTACK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TINYSTACK_DATA_DIR", str(tmp_path / "data"))


def proc_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def test_a_zombie_is_dead_although_kill_0_says_otherwise():
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while proc_state(child.pid) != "Z":  # not reaped: we never wait on it here
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        os.kill(child.pid, 0)  # succeeds on a zombie

        assert not runner.pid_alive(child.pid)
    finally:
        child.wait()


def test_a_running_process_is_alive_and_a_reaped_one_is_not():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert runner.pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not runner.pid_alive(child.pid)


def test_read_pid(tmp_path):
    pid_file = tmp_path / "x.pid"
    assert runner.read_pid(pid_file) is None
    pid_file.write_text("garbage\n")
    assert runner.read_pid(pid_file) is None
    pid_file.write_text("1234\n")
    assert runner.read_pid(pid_file) == 1234


def test_running_pid_ignores_stale_files_and_this_process(tmp_path):
    settings = load()
    settings.data_dir.mkdir(parents=True)
    assert runner.running_pid(settings) is None
    settings.pid_file.write_text(f"{os.getpid()}\n")
    assert runner.running_pid(settings) is None
    child = subprocess.Popen(["sleep", "30"])
    try:
        settings.pid_file.write_text(f"{child.pid}\n")
        assert runner.running_pid(settings) == child.pid
    finally:
        child.kill()
        child.wait()
    assert runner.running_pid(settings) is None


def test_serve_refuses_a_second_instance_before_touching_anything(tmp_path):
    settings = load(port=0)
    settings.data_dir.mkdir(parents=True)
    child = subprocess.Popen(["sleep", "30"])
    try:
        settings.pid_file.write_text(f"{child.pid}\n")
        with pytest.raises(runner.AlreadyRunning, match=f"already running.*pid {child.pid}"):
            runner.serve(settings)
        assert runner.read_pid(settings.pid_file) == child.pid
    finally:
        child.kill()
        child.wait()


def test_bind_socket_says_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(runner.PortTaken, match=f"port {port} on 127.0.0.1 is already in use"):
            runner.bind_socket("127.0.0.1", port)


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:8080"), ("0.0.0.0", "http://127.0.0.1:8080"),
     ("::", "http://[::1]:8080"), ("::1", "http://[::1]:8080")],
)
def test_local_url(host, url):
    assert runner.local_url(load(host=host)) == url


def test_roles_repeat_and_are_checked(capsys):
    args = cli.build_parser().parse_args(["up", "--role", "compute", "--role", "network"])
    assert args.role == ["compute", "network"]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["up", "--role", "database"])
    assert "invalid choice" in capsys.readouterr().err


def test_flags_reach_the_settings(tmp_path):
    args = cli.build_parser().parse_args([
        "up", "--data-dir", str(tmp_path / "d"), "--db", "mysql://x/y", "--bus", "amqp://r/",
        "--host", "0.0.0.0", "--port", "9999", "--role", "compute", "--role", "compute",
        "--node-name", "n1", "--log-level", "DEBUG",
    ])
    settings = cli._load_settings(args)
    assert settings.data_dir == tmp_path / "d"
    assert (settings.db, settings.bus, settings.host, settings.port) == (
        "mysql://x/y", "amqp://r/", "0.0.0.0", 9999)
    assert settings.roles == ["compute"]
    assert (settings.node_name, settings.log_level) == ("n1", "debug")


def test_detached_child_gets_the_same_flags_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args([
        "up", "-d", "--data-dir", "rel", "--port", "9999", "--role", "storage",
        "--bus", "amqp://r/", "--access-log",
    ])
    assert cli._child_argv(args) == [
        "up", "--data-dir", str(tmp_path / "rel"), "--port", "9999", "--bus", "amqp://r/",
        "--role", "storage", "--access-log",
    ]


def test_status_and_down_when_nothing_runs(tmp_path, capsys):
    assert cli.main(["status", "--port", "9"]) == 1
    assert "not running" in capsys.readouterr().err
    assert cli.main(["down"]) == 0
    assert "not running" in capsys.readouterr().out


def test_down_removes_a_stale_pid_file(tmp_path, capsys):
    settings = load()
    settings.data_dir.mkdir(parents=True)
    child = subprocess.Popen(["true"])
    child.wait()
    settings.pid_file.write_text(f"{child.pid}\n")

    assert cli.main(["down"]) == 0

    assert not settings.pid_file.exists()


def test_bad_settings_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYSTACK_PORT", "eighty")
    assert cli.main(["status"]) == 2
    assert "invalid settings: port" in capsys.readouterr().err
    assert cli.main(["status", "--config", str(tmp_path / "missing.toml")]) == 2


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: tinystack" in capsys.readouterr().err


@pytest.mark.parametrize("module", [cli, runner])
def test_all_names_exist(module):
    for name in module.__all__:
        assert hasattr(module, name), name
