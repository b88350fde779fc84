"""What the benchmarks share: a throwaway tinystack of their own, and a few small helpers.

A bench script puts this folder on ``sys.path`` and imports what it needs::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cloud import Cloud, free_port, log

``Cloud`` starts a tinystack with ``tinystack up -d`` on a data dir and a
port of the bench's choosing, logs in as the admin of the admin project,
makes JSON calls with ``http.client`` and stops it with ``tinystack down``.

Standard library only (PyYAML is imported when a cloud logs in), so that
``bench/identity``, which runs from any Python 3.11+, can use it too.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def warn_if_busy() -> float:
    """The 1-minute load average; above 1 (other work on the machine), says so."""
    load = os.getloadavg()[0]
    if load > 1:
        log(f"load average is {load:.1f}: the figures will be noisy")
    return load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_tinystack() -> Path | None:
    """The ``tinystack`` command: beside this Python, else in the repository's ``.venv``,
    else on ``PATH``; None when there is none."""
    for candidate in (Path(sys.executable).parent / "tinystack",
                      REPO / ".venv" / "bin" / "tinystack"):
        if candidate.exists():
            return candidate
    found = shutil.which("tinystack")
    return Path(found) if found else None


def tinystack_bin() -> list[str]:
    """The command line that runs tinystack (``python -m tinystack`` as a last resort)."""
    found = find_tinystack()
    return [str(found)] if found else [sys.executable, "-m", "tinystack"]


def clean_env(**settings: str) -> dict:
    """This process's environment without its ``OS_*`` and ``TINYSTACK_*`` variables (the
    bench's tinystack must not pick up the user's cloud or settings), plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "TINYSTACK_"))}
    env.update(settings)
    return env


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far: the cost of a piece of work,
    which noise moves much less than its wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class LoadSampler:
    """The 1-minute load average, every ``every`` seconds while in use."""

    def __init__(self, every: float = 2.0):
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class ApiError(RuntimeError):
    """A call answered something other than what the bench needs."""


@dataclass
class Cloud:
    """A throwaway tinystack: ``start`` (``up -d``, then the admin's token), ``call``, ``stop``.

    ``env`` is the environment of ``tinystack up`` (and so of the server);
    ``clouds_yaml`` is where ``up`` writes its client entry (default: in the data
    dir, never the user's own file); ``headers`` go with every call.
    """

    data_dir: Path
    port: int
    env: dict
    clouds_yaml: Path | None = None
    headers: dict = field(default_factory=dict)
    call_timeout: float = 120
    up_timeout: float = 240
    down_timeout: float = 180
    pid: int = 0
    token: str = ""
    project_id: str = ""

    def start(self) -> None:
        clouds_yaml = self.clouds_yaml or self.data_dir / "clouds.yaml"
        argv = [*tinystack_bin(), "up", "-d", "--data-dir", str(self.data_dir), "--port",
                str(self.port), "--clouds-yaml", str(clouds_yaml)]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=self.up_timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SystemExit(f"tinystack up failed:\n{done.stdout}\n{done.stderr}")
        self.pid = int((self.data_dir / "tinystack.pid").read_text().split()[0])
        self.login()

    def login(self) -> None:
        """A token for the admin of the admin project (password from credentials.yaml)."""
        import yaml

        password = yaml.safe_load((self.data_dir / "credentials.yaml").read_text())["admin"]
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        status, headers, reply = self.call("POST", "/identity/v3/auth/tokens", body, auth=False)
        if status != 201:
            raise ApiError(f"admin login: HTTP {status}")
        self.token = headers["x-subject-token"]
        self.project_id = reply["token"]["project"]["id"]

    def stop(self) -> None:
        subprocess.run([*tinystack_bin(), "down", "--data-dir", str(self.data_dir)],
                       env=self.env, capture_output=True, timeout=self.down_timeout)

    def call(self, method: str, path: str, body=None, auth: bool = True):
        """(status, headers with lower-case names, JSON body or text or None)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.call_timeout)
        headers = {"Content-Type": "application/json", **self.headers}
        if auth:
            headers["X-Auth-Token"] = self.token
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers=headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            data = payload.decode(errors="replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def ok(self, method: str, path: str, body=None, expect=(200, 201, 202, 204)):
        """The body of a call that must answer one of ``expect``."""
        status, _, data = self.call(method, path, body)
        if status not in expect:
            raise ApiError(f"{method} {path}: HTTP {status} {str(data)[:300]}")
        return data

    def rss(self) -> int:
        """The server's resident memory, bytes."""
        return rss_bytes(self.pid)

    def network_id(self, network: str, timeout: float = 60) -> str:
        """A network's id from its name or id; the bootstrap networks appear a little
        after ``up`` returns, so this waits for it."""
        deadline = time.monotonic() + timeout
        while True:
            for found in self.ok("GET", "/network/v2.0/networks")["networks"]:
                if network in (found["id"], found["name"]):
                    return found["id"]
            if time.monotonic() > deadline:
                raise ApiError(f"no network {network} after {timeout:g} s")
            time.sleep(0.5)
