"""The reference: real OpenStack Keystone from PyPI, in its own virtualenv.

Keystone is configured the plain way: SQLite database, Fernet tokens,
bcrypt password hashes at the same cost tinystack uses, served by gunicorn
with sync workers on a loopback port.

Caching: by default Keystone gets oslo.cache's in-process
`dogpile.cache.memory` backend.  Keystone is documented to run with a cache
(memcached in production); without one, on SQLite, it recomputes role
assignments with hundreds of queries per request (about 650 for a token
validation, each session opening a new SQLite connection) and validates a
token or two per second.  The in-process cache is faster than memcached (no
network hop, no serialisation), so it is the stricter baseline.  `cache="off"`
gives the install guide's cache-less configuration.

Layout (all under bench/.ref/, which is gitignored):
    keystone-venv/     the virtualenv; built once, reused while its marker
                       matches the pinned requirements below
    keystone-state/    config, SQLite db, key repositories, logs; rebuilt by
                       every `setup()` so each run starts from the same state

Standalone use, handy for poking at the reference by hand:
    python bench/identity/keystone_ref.py build
    python bench/identity/keystone_ref.py serve [--port N]
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import (BCRYPT_COST, REF_DIR, BenchError, bcrypt_costs_in_sqlite, free_port,
                    pid_alive, tree_rss_bytes, wait_http_200)

# Pinned so that the reference does not move under the benchmark.  gunicorn
# 23 is the last line without the control socket that later releases open in
# the home directory.
REQUIREMENTS = ["keystone==30.0.0", "gunicorn==23.0.0"]

VENV_DIR = REF_DIR / "keystone-venv"
STATE_DIR = REF_DIR / "keystone-state"
MARKER = VENV_DIR / ".bench-ready"


def _run(cmd: list[str], *, log: Path, env: dict | None = None, timeout: float = 900,
         cwd: Path | None = None) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(str(c) for c in cmd)}\n")
        f.flush()
        r = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT,
                           env=env, timeout=timeout, cwd=cwd)
    if r.returncode != 0:
        tail = log.read_text()[-3000:]
        raise BenchError(f"{Path(cmd[0]).name} {cmd[1] if len(cmd) > 1 else ''} "
                         f"failed ({r.returncode}); end of {log.name}:\n{tail}")


def venv_bin(name: str) -> Path:
    return VENV_DIR / "bin" / name


def ensure_venv(python: str | None = None, log=print) -> Path:
    """Build the Keystone virtualenv unless an up-to-date one is there."""
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if MARKER.exists() and MARKER.read_text() == wanted and venv_bin("gunicorn").exists() \
            and venv_bin("keystone-manage").exists():
        return VENV_DIR
    REF_DIR.mkdir(parents=True, exist_ok=True)
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    pip_log = REF_DIR / "keystone-pip.log"
    pip_log.write_text("")
    log(f"building the Keystone virtualenv ({', '.join(REQUIREMENTS)}); takes a minute ...")
    _run([python or sys.executable, "-m", "venv", VENV_DIR], log=pip_log)
    _run([venv_bin("python"), "-m", "pip", "install", "--disable-pip-version-check",
          *REQUIREMENTS], log=pip_log)
    # The resolved set, for the record.
    freeze = subprocess.run([venv_bin("python"), "-m", "pip", "freeze"],
                            stdout=subprocess.PIPE, text=True).stdout
    (REF_DIR / "keystone-freeze.txt").write_text(freeze)
    MARKER.write_text(wanted)
    return VENV_DIR


def versions() -> dict:
    code = ("import importlib.metadata as m, json, platform;"
            "print(json.dumps({**{p: m.version(p) for p in "
            "('keystone','gunicorn','bcrypt','SQLAlchemy','oslo.db','Flask')},"
            "'python': platform.python_version()}))")
    r = subprocess.run([venv_bin("python"), "-c", code], stdout=subprocess.PIPE, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {}


KEYSTONE_CONF = """\
[DEFAULT]
debug = false
log_file = {state}/keystone.log

[database]
connection = sqlite:///{state}/keystone.db

[token]
provider = fernet

[fernet_tokens]
key_repository = {state}/fernet-keys

[fernet_receipts]
key_repository = {state}/receipt-keys

[credential]
key_repository = {state}/credential-keys

[identity]
password_hash_algorithm = bcrypt
password_hash_rounds = {rounds}

[cache]
{cache}
"""

CACHES = {
    "memory": "enabled = true\nbackend = dogpile.cache.memory",
    "off": "enabled = false",
}

GUNICORN_CONF = """\
# Read by gunicorn from its working directory.  No command-line arguments are
# passed on purpose: Keystone parses sys.argv with oslo.config in each worker
# and rejects gunicorn's own flags.
wsgi_app = "keystone.wsgi.api:application"
bind = "127.0.0.1:{port}"
workers = {workers}
worker_class = "sync"
timeout = 120
pidfile = "{state}/gunicorn.pid"
errorlog = "{state}/gunicorn.log"
accesslog = None
proc_name = "keystone-bench"
"""


class ReferenceKeystone:
    def __init__(self, port: int | None = None, workers: int = 2, cache: str = "memory",
                 state_dir: Path = STATE_DIR, log=print):
        self.port = port or free_port()
        self.workers = workers
        self.cache = cache
        self.state = state_dir
        self.log = log
        self.password = ""
        self.proc: subprocess.Popen | None = None

    # -- urls and credentials ------------------------------------------------
    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    def credentials(self) -> dict:
        return {"auth_url": self.auth_url, "username": "admin", "password": self.password,
                "project_name": "admin", "user_domain_id": "default",
                "project_domain_id": "default"}

    def _env(self) -> dict:
        env = dict(os.environ)
        env["OS_KEYSTONE_CONFIG_FILES"] = str(self.state / "keystone.conf")
        env.pop("OS_KEYSTONE_CONFIG_DIR", None)
        env["PYTHONWARNINGS"] = "ignore"
        return env

    # -- setup -----------------------------------------------------------------
    def _stop_leftover(self) -> None:
        pidfile = self.state / "gunicorn.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return
        if str(VENV_DIR) in cmdline and pid_alive(pid):
            self.log(f"stopping a Keystone left running by an earlier run (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            for _ in range(150):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)

    def setup(self) -> None:
        """Fresh config, database, keys and admin user (generated password)."""
        ensure_venv(log=self.log)
        if self.state.exists():
            self._stop_leftover()
            shutil.rmtree(self.state)
        self.state.mkdir(parents=True)
        for d in ("fernet-keys", "receipt-keys", "credential-keys"):
            (self.state / d).mkdir(mode=0o700)
        if self.cache not in CACHES:
            raise BenchError(f"unknown Keystone cache {self.cache!r}: "
                             f"one of {', '.join(CACHES)}")
        cache = CACHES[self.cache]
        (self.state / "keystone.conf").write_text(
            KEYSTONE_CONF.format(state=self.state, rounds=BCRYPT_COST, cache=cache))
        (self.state / "gunicorn.conf.py").write_text(
            GUNICORN_CONF.format(state=self.state, port=self.port, workers=self.workers))

        self.password = secrets.token_urlsafe(18)
        conf = ["--config-file", self.state / "keystone.conf"]
        manage = venv_bin("keystone-manage")
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        mlog = self.state / "manage.log"
        env = self._env()
        _run([manage, *conf, "db_sync"], log=mlog, env=env)
        for what in ("fernet_setup", "credential_setup"):
            _run([manage, *conf, what, "--keystone-user", user, "--keystone-group", group],
                 log=mlog, env=env)
        # The password goes through the environment, not the command line.
        _run([manage, *conf, "bootstrap",
              "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
              "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
              "--bootstrap-region-id", "RegionOne",
              "--bootstrap-admin-url", self.auth_url, "--bootstrap-public-url", self.auth_url,
              "--bootstrap-internal-url", self.auth_url],
             log=mlog, env={**env, "OS_BOOTSTRAP_PASSWORD": self.password})

        costs = bcrypt_costs_in_sqlite(self.state / "keystone.db")
        if costs != {BCRYPT_COST}:
            raise BenchError(f"Keystone stored bcrypt cost(s) {sorted(costs)}, "
                             f"expected {{{BCRYPT_COST}}}")
        (self.state / "admin-openrc").write_text(
            "".join(f"export {k}={v}\n" for k, v in {
                "OS_AUTH_URL": self.auth_url, "OS_USERNAME": "admin",
                "OS_PASSWORD": self.password, "OS_PROJECT_NAME": "admin",
                "OS_USER_DOMAIN_ID": "default", "OS_PROJECT_DOMAIN_ID": "default",
                "OS_IDENTITY_API_VERSION": "3"}.items()))

    def bcrypt_cost(self) -> set[int]:
        return bcrypt_costs_in_sqlite(self.state / "keystone.db")

    # -- run -------------------------------------------------------------------
    def start(self, deadline_s: float = 120) -> float:
        """Start gunicorn; return seconds from launch to the first 200 on /v3."""
        if self.proc and self.proc.poll() is None:
            raise BenchError("Keystone is already running")
        out = open(self.state / "gunicorn.out", "a")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([str(venv_bin("gunicorn"))], cwd=self.state,
                                     env=self._env(), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        try:
            t1 = wait_http_200(self.auth_url, deadline_s, proc=self.proc)
        except BenchError as e:
            self.stop()
            tail = (self.state / "gunicorn.log").read_text()[-2000:] \
                if (self.state / "gunicorn.log").exists() else ""
            raise BenchError(f"{e}\nend of gunicorn.log:\n{tail}") from None
        return t1 - t0

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        self.proc = None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # gunicorn: graceful stop of master + workers
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # our own session, started above
                p.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def rss(self) -> tuple[int, list[int]]:
        if not self.pid:
            raise BenchError("Keystone is not running")
        return tree_rss_bytes(self.pid)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or reuse) the Keystone virtualenv")
    s = sub.add_parser("serve", help="set up and serve Keystone until Ctrl-C")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--cache", choices=sorted(CACHES), default="memory",
                   help="Keystone's cache: in-process dogpile memory (default) or off")
    a = ap.parse_args(argv)
    ensure_venv()
    if a.cmd == "build":
        print(f"Keystone virtualenv ready: {json.dumps(versions())}")
        return 0
    ks = ReferenceKeystone(port=a.port, workers=a.workers, cache=a.cache)
    ks.setup()
    try:
        took = ks.start()
        print(f"Keystone answering at {ks.auth_url} after {took:.2f}s "
              f"(credentials in {ks.state / 'admin-openrc'}); Ctrl-C stops it")
        while ks.proc and ks.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        ks.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
