"""tinystack under test, driven through its own command line.

Contract used here:
  tinystack up -d --data-dir DIR --port PORT   starts the all-in-one cloud in the
                                               background, returns once every API answers
  tinystack down --data-dir DIR                stops it
  DIR/tinystack.pid                            the server's pid
  DIR/openrc                                   `export OS_...=...` lines for the admin
  identity at http://127.0.0.1:PORT/identity/v3
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

from common import (REF_DIR, REPO_ROOT, BenchError, assert_loopback, bcrypt_costs_under,
                    find_tinystack, free_port, http, pid_alive, tree_rss_bytes)

DATA_DIR = REF_DIR / "tinystack-data"
CLI_LOG = REF_DIR / "tinystack-cli.log"
# `up` may write client entries into a clouds.yaml; keep them out of the
# user's own file (other runs of tinystack on this machine may rely on it).
CLOUDS_YAML = REF_DIR / "tinystack-clouds.yaml"


def find_cli() -> Path:
    found = find_tinystack()
    if found:
        return found
    raise BenchError("the tinystack command was not found (expected .venv/bin/tinystack "
                     "in the repository; install the project into its .venv first)")


def parse_openrc(text: str) -> dict[str, str]:
    """KEY=VALUE pairs from `export ...` lines (one or several per line, shell quoting)."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if words and words[0] == "export":
            words = words[1:]
        for w in words:
            if "=" in w:
                k, v = w.split("=", 1)
                if k.isidentifier():
                    env[k] = v
    return env


def v3_url(auth_url: str) -> str:
    u = auth_url.rstrip("/")
    return u if u.endswith("/v3") else u + "/v3"


class Tinystack:
    def __init__(self, port: int | None = None, data_dir: Path = DATA_DIR, log=print):
        self.port = port or free_port()
        self.data_dir = data_dir
        self.log = log
        self.cli = find_cli()
        self.running = False
        self._extra_up_args: list[str] | None = None

    @property
    def identity_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/identity/v3"

    def _cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        REF_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.cli), *args]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           stdin=subprocess.DEVNULL, timeout=timeout, cwd=REPO_ROOT)
        with open(CLI_LOG, "a") as f:
            f.write(f"$ tinystack {' '.join(args)}\n(exit {r.returncode})\n{r.stdout}\n")
        return r

    def version(self) -> str:
        py = self.cli.parent / "python"
        if py.exists():
            r = subprocess.run([str(py), "-c", "import importlib.metadata as m;"
                                "print(m.version('tinystack'))"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            if r.returncode == 0:
                return r.stdout.strip()
        return "?"

    # -- lifecycle -------------------------------------------------------------
    def reset(self) -> None:
        """Stop anything left in the data dir by an earlier run, then wipe it."""
        if self.data_dir.exists():
            if self.pid():
                self._cli("down", "--data-dir", str(self.data_dir), timeout=60)
                self._wait_gone(30)
            shutil.rmtree(self.data_dir)
        CLI_LOG.unlink(missing_ok=True)

    def extra_up_args(self) -> list[str]:
        """Optional flags, passed only when this build of `tinystack up` has them."""
        if self._extra_up_args is None:
            r = subprocess.run([str(self.cli), "up", "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            self._extra_up_args = []
            if "--clouds-yaml" in r.stdout:
                self._extra_up_args += ["--clouds-yaml", str(CLOUDS_YAML)]
        return self._extra_up_args

    def up(self) -> float:
        """`tinystack up -d`; return its wall time, after checking identity answers."""
        extra = self.extra_up_args()
        t0 = time.monotonic()
        r = self._cli("up", "-d", "--data-dir", str(self.data_dir), "--port", str(self.port),
                      *extra)
        took = time.monotonic() - t0
        self.running = True
        if r.returncode != 0:
            raise BenchError(f"tinystack up -d failed ({r.returncode}):\n{r.stdout[-2000:]}")
        status = http("GET", self.identity_url, timeout=5).status
        if status != 200:
            raise BenchError(f"tinystack up -d returned but {self.identity_url} answered {status}")
        return took

    def down(self) -> None:
        if not self.running and not self.pid():
            return
        self.running = False
        r = self._cli("down", "--data-dir", str(self.data_dir), timeout=60)
        if r.returncode != 0:
            self.log(f"warning: tinystack down exited {r.returncode}: {r.stdout[-500:]}")
        self._wait_gone(30)

    def _wait_gone(self, seconds: float) -> None:
        pid = self.pid()
        end = time.monotonic() + seconds
        while pid and pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        if pid and pid_alive(pid):
            raise BenchError(f"tinystack (pid {pid}) still running {seconds:.0f}s after down")

    # -- facts -----------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "tinystack.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def credentials(self) -> dict:
        rc = self.data_dir / "openrc"
        if not rc.exists():
            raise BenchError(f"no openrc in the tinystack data dir ({rc.name} missing)")
        env = parse_openrc(rc.read_text())
        missing = [k for k in ("OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME")
                   if k not in env]
        if missing:
            raise BenchError(f"openrc lacks {', '.join(missing)}")
        auth_url = v3_url(env["OS_AUTH_URL"])
        assert_loopback(auth_url)
        return {"auth_url": auth_url, "username": env["OS_USERNAME"],
                "password": env["OS_PASSWORD"], "project_name": env["OS_PROJECT_NAME"],
                "user_domain_id": env.get("OS_USER_DOMAIN_ID", "default"),
                "project_domain_id": env.get("OS_PROJECT_DOMAIN_ID", "default")}

    def rss(self) -> tuple[int, list[int]]:
        pid = self.pid()
        if not pid:
            raise BenchError("tinystack is not running (no live pid in tinystack.pid)")
        return tree_rss_bytes(pid)

    def bcrypt_cost(self) -> set[int]:
        return bcrypt_costs_under(self.data_dir)
