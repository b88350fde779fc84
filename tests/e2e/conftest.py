"""Fixtures that start tinystack for real and hand it to the real clients.

- ``tinystack_up``: one running tinystack per test module and backend, made by
  ``tinystack up -d`` with a temp data dir, a free port and a temp clouds.yaml,
  stopped by ``tinystack down`` after the module, which then checks that
  nothing it started is left running. Tests must leave it running.
- ``launch_tinystack``: a ``Launcher`` for tests that stop, restart or break
  their own instance (or start several nodes); everything it started is
  stopped and checked after the test.

Backends (``tinystack_up`` runs each module once per backend): ``local`` is
SQLite with the in-process bus; ``mysql-rabbitmq`` and ``postgresql-rabbitmq``
put the bus on RabbitMQ (``--amqp-url``) and the database on a fresh database
on that server of ``--dbs`` (one backend per server; ``rabbitmq`` on SQLite if
the list has none). They are left out when no RabbitMQ is configured.

``Tinystack.env`` is the environment for subprocesses: the venv's bin first on
PATH (so ``openstack`` is the real client installed beside pytest),
``OS_CLIENT_CONFIG_FILE`` pointing at this instance's clouds.yaml, and the
``TINYSTACK_*`` variables that make ``tinystack status``/``down`` find it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from tinystack.runner import get_health, pid_alive, read_pid

BIN = Path(sys.executable).parent
"""The bin dir of the Python running the tests: tinystack and openstack live there."""

CLIENT_TIMEOUT = 120


def tinystack_command() -> list[str]:
    script = BIN / "tinystack"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tinystack"]


def free_port() -> int:
    """A TCP port no socket has on any address (a port bound on another address only, such
    as the multinode test's relay on its data bridge, would be handed out for loopback)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def port_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def processes_mentioning(path: Path) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line names ``path`` or a file under it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        mentions = f"{path} " in f"{cmdline} " or f"{path}/" in cmdline
        if mentions and pid_alive(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


@dataclass
class Backend:
    name: str
    db: str | None = None
    bus: str | None = None


@dataclass
class Tinystack:
    """One tinystack made by a ``Launcher``: where it lives and how to drive it."""

    url: str
    """Base URL, http://127.0.0.1:PORT."""
    port: int
    data_dir: Path
    clouds_yaml: Path
    env: dict[str, str]
    """Environment for subprocesses of the real clients and of ``tinystack``."""
    backend: Backend = field(default_factory=lambda: Backend("local"))
    output: str = ""
    """What ``tinystack up -d`` printed."""
    pid: int | None = None
    """The pid of the running tinystack process, read after it started."""
    stopped: bool = field(default=False, repr=False)
    foreground_log: Path | None = field(default=None, repr=False)
    """Where a foreground ``tinystack up`` started by ``start_foreground`` writes."""

    @property
    def log_file(self) -> Path:
        """The detached process's log, else the foreground one's output."""
        detached = self.data_dir / "logs" / "tinystack.log"
        if self.foreground_log is not None and not detached.exists():
            return self.foreground_log
        return detached

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "tinystack.pid"

    def up_argv(self, *, detach: bool = True, roles: tuple[str, ...] = ()) -> list[str]:
        """The ``tinystack up`` command line for this instance and its backend."""
        argv = [*tinystack_command(), "up", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        if detach:
            argv.append("-d")
        if self.backend.db:
            argv += ["--db", self.backend.db]
        if self.backend.bus:
            argv += ["--bus", self.backend.bus]
        for role in roles:
            argv += ["--role", role]
        return argv

    def start_foreground(self, output, roles: tuple[str, ...] = ()) -> subprocess.Popen:
        """Start ``tinystack up`` (not detached) writing to the open file ``output``."""
        if getattr(output, "name", None):
            self.foreground_log = Path(output.name)
        return subprocess.Popen(self.up_argv(detach=False, roles=roles), env=self.env,
                                stdin=subprocess.DEVNULL, stdout=output, stderr=output)

    def wait_until_healthy(self, process: subprocess.Popen | None = None, timeout: float = 60) -> dict:
        """Wait for /healthcheck 200; fails if ``process`` exits first. The health body."""
        deadline = time.monotonic() + timeout
        while True:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"tinystack exited {process.returncode}\n{self.log_tail()}")
            code, body = self.health()
            if code == 200:
                return body or {}
            if time.monotonic() > deadline:
                raise AssertionError(f"no healthy answer at {self.url} within {timeout} s")
            time.sleep(0.05)

    def cli(self, *args: str, check: bool = True, timeout: float = CLIENT_TIMEOUT):
        """Run ``tinystack ARGS`` against this instance; the CompletedProcess."""
        return _run([*tinystack_command(), *args], self.env, check, timeout)

    def openstack(self, *args: str, cloud: str = "tinystack-admin", check: bool = True,
                  timeout: float = CLIENT_TIMEOUT):
        """Run the real ``openstack --os-cloud CLOUD ARGS``; the CompletedProcess."""
        return _run([str(BIN / "openstack"), "--os-cloud", cloud, *args], self.env, check, timeout)

    def health(self) -> tuple[int | None, dict | None]:
        return get_health(self.url)

    def answers(self) -> bool:
        """Does anything accept connections on this instance's port?"""
        return port_answers(self.port)

    def leftovers(self) -> list[tuple[int, str]]:
        """Live processes whose command line names this data dir: (pid, cmdline)."""
        return processes_mentioning(self.data_dir)

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log file)"


def _run(argv: list[str], env: dict[str, str], check: bool, timeout: float):
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result


_FLOATING_NETS = itertools.count()
"""Third octets for each instance's external network: two instances up at once must not
both put 172.24.4.1 on a host bridge (the default a user's own cloud may hold)."""


def client_env(data_dir: Path, port: int, clouds_yaml: Path) -> dict[str, str]:
    keep_tinystack = {"TINYSTACK_LOG_LEVEL"}
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("OS_") and (not k.startswith("TINYSTACK_") or k in keep_tinystack)
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        OS_CLIENT_CONFIG_FILE=str(clouds_yaml),
        TINYSTACK_CLOUDS_YAML=str(clouds_yaml),
        TINYSTACK_DATA_DIR=str(data_dir),
        TINYSTACK_PORT=str(port),
        TINYSTACK_NETWORK__FLOATING_RANGE=f"172.24.{10 + next(_FLOATING_NETS) % 240}.0/24",
    )
    return env


class Launcher:
    """Starts tinystacks under one temp dir and stops them all at the end."""

    def __init__(self, base: Path):
        self.base = base
        self.started: list[Tinystack] = []

    def prepare(self, name: str | None = None, backend: Backend | None = None) -> Tinystack:
        """A ``Tinystack`` with its own data dir, port and clouds.yaml, not started yet.

        It is checked at the end like a started one, so a test that starts it
        some other way (a foreground ``tinystack up``) is checked too.
        """
        name = name or f"node{len(self.started)}"
        data_dir = self.base / name
        port = free_port()
        clouds_yaml = self.base / f"{name}-clouds.yaml"
        ts = Tinystack(
            url=f"http://127.0.0.1:{port}", port=port, data_dir=data_dir,
            clouds_yaml=clouds_yaml, env=client_env(data_dir, port, clouds_yaml),
            backend=backend or Backend("local"),
        )
        self.started.append(ts)
        return ts

    def start(self, *, backend: Backend | None = None, roles: tuple[str, ...] = (),
              extra: tuple[str, ...] = (), name: str | None = None) -> Tinystack:
        """``tinystack up -d`` a new instance; fails the test if it does not come up."""
        ts = self.prepare(name, backend)
        result = _run([*ts.up_argv(roles=roles), *extra], ts.env, False, CLIENT_TIMEOUT)
        ts.output = result.stdout
        ts.pid = read_pid(ts.pid_file)
        if result.returncode != 0:
            raise AssertionError(
                f"tinystack up -d exited {result.returncode}\n--- stdout ---\n{result.stdout}"
                f"\n--- stderr ---\n{result.stderr}\n--- log ---\n{ts.log_tail()}"
            )
        return ts

    def stop(self, ts: Tinystack) -> None:
        """``tinystack down`` and check that nothing of it is left running."""
        if ts.stopped:
            return
        ts.stopped = True
        result = ts.cli("down", check=False)
        leftovers = ts.leftovers()
        for pid, _ in leftovers:  # do not let one failed test poison the next
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        problems = []
        if result.returncode != 0:
            problems.append(f"tinystack down exited {result.returncode}: {result.stderr}")
        if ts.pid is not None and pid_alive(ts.pid):
            problems.append(f"tinystack (pid {ts.pid}) still runs")
        if leftovers:
            problems.append(f"left running: {leftovers}")
        if ts.pid_file.exists():
            problems.append("the pid file is still there")
        if ts.answers():
            problems.append(f"port {ts.port} still answers")
        if problems:
            raise AssertionError("; ".join(problems) + f"\n--- log ---\n{ts.log_tail()}")

    def stop_all(self) -> None:
        errors = []
        for ts in reversed(self.started):
            print(f"--- log of {ts.data_dir.name} ({ts.backend.name}) ---\n{ts.log_tail()}")
            try:
                self.stop(ts)
            except AssertionError as exc:
                errors.append(str(exc))
        if errors:
            raise AssertionError("\n\n".join(errors))


def e2e_backends(config: pytest.Config) -> dict[str, str | None]:
    """Backend name -> database server (None: SQLite in the data dir).

    ``local``; then, with the bus on RabbitMQ, one per server in ``--dbs``
    (``mysql-rabbitmq``, ``postgresql-rabbitmq``), or ``rabbitmq`` on SQLite
    when the list has no server.
    """
    backends: dict[str, str | None] = {"local": None}
    if config.getoption("amqp_url"):
        servers = [db.strip() for db in config.getoption("dbs").split(",")
                   if db.strip() and db.strip() != "sqlite"]
        for server in servers:
            kind = urlsplit(server).scheme.split("+")[0]
            kind = {"mariadb": "mysql", "postgres": "postgresql"}.get(kind, kind)
            backends[f"{kind}-rabbitmq"] = server
        if not servers:
            backends["rabbitmq"] = None
    return backends


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "e2e_backend" in metafunc.fixturenames:
        backends = list(e2e_backends(metafunc.config))
        marker = metafunc.definition.get_closest_marker("backends")
        if marker is not None:
            # a module of real guests runs once on the in-process bus and once on RabbitMQ
            # (the first broker backend), not on every database: the data path is the same
            wanted = [b for b in backends if b == "local"]
            wanted += [b for b in backends if b != "local"][:marker.kwargs.get("brokers", 1)]
            backends = wanted
        metafunc.parametrize("e2e_backend", backends, indirect=True, scope="module")


@contextlib.contextmanager
def private_vhost(amqp_url: str) -> Iterator[str]:
    """``amqp_url`` on a virtual host of its own, when the broker is local; deleted after.

    Every tinystack names its broker objects alike, so two clouds on one vhost
    hear each other's messages. A local broker gets a fresh vhost through
    ``rabbitmqctl``; elsewhere the URL is used as given.
    """
    parts = urlsplit(amqp_url)
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        yield amqp_url
        return
    vhost = f"tinystack_e2e_{uuid.uuid4().hex[:12]}"
    user = unquote(parts.username or "guest")

    def ctl_run(*args: str) -> bool:
        try:
            return subprocess.run([ctl, "-q", *args], capture_output=True,
                                  timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    if not (ctl_run("add_vhost", vhost) and ctl_run("set_permissions", "-p", vhost, user, ".*", ".*", ".*")):
        ctl_run("delete_vhost", vhost)
        yield amqp_url
        return
    try:
        yield urlunsplit(parts._replace(path=f"/{vhost}"))
    finally:
        ctl_run("delete_vhost", vhost)


@pytest.fixture(scope="session")
def e2e_amqp_url(amqp_url: str) -> Iterator[str]:
    """``amqp_url`` on a virtual host of this session's own (``private_vhost``), so two
    test sessions on one broker (a developer's and CI's) do not hear each other."""
    with private_vhost(amqp_url) as url:
        yield url


@pytest.fixture
def own_amqp_url(amqp_url: str) -> Iterator[str]:
    """``amqp_url`` on a virtual host of this test's own (``private_vhost``): for a test
    that starts a cloud of several nodes while a module's ``tinystack_up`` on RabbitMQ
    still runs on the session's vhost."""
    with private_vhost(amqp_url) as url:
        yield url


@pytest.fixture(scope="module")
def e2e_backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "local":
        return Backend("local")
    amqp_url = request.getfixturevalue("e2e_amqp_url")
    server = e2e_backends(request.config)[request.param]
    db = request.getfixturevalue("make_database")(server).url if server else None
    return Backend(request.param, db=db, bus=amqp_url)


@pytest.fixture(scope="module")
def tinystack_up(e2e_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinystack]:
    """A running tinystack shared by the tests of one module (once per backend)."""
    launcher = Launcher(tmp_path_factory.mktemp("tinystack"))
    try:
        yield launcher.start(backend=e2e_backend)
    finally:
        launcher.stop_all()


@pytest.fixture
def launch_tinystack(tmp_path: Path) -> Iterator[Launcher]:
    """A ``Launcher`` whose instances are all stopped and checked after the test."""
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()
