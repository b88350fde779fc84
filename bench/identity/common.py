"""Small shared helpers for the identity benchmark: paths, HTTP, processes.

Standard library only, so that the benchmark runs from any Python 3.11+
without touching the project's dependencies.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH_DIR = HERE.parent
REPO_ROOT = BENCH_DIR.parent
# Everything the benchmark builds or starts lives here; it is gitignored.
REF_DIR = BENCH_DIR / ".ref"

# What every bench shares (bench/cloud.py, standard library only too); the identity
# bench keeps its own HTTP client and its own way of driving tinystack, which it times.
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(1, str(BENCH_DIR))
from cloud import find_tinystack, free_port, log, rss_bytes  # noqa: E402, F401

# tinystack hashes passwords with bcrypt at this cost; the reference Keystone
# is configured with the same cost so that password issue compares like with like.
BCRYPT_COST = 12


class BenchError(RuntimeError):
    """A setup or measurement step failed; the message says which."""


# --------------------------------------------------------------------------- #
# Safety: every request the benchmark makes goes to this machine only.
# --------------------------------------------------------------------------- #
def assert_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise BenchError(f"refusing to send benchmark traffic to non-loopback host {host!r}")


# --------------------------------------------------------------------------- #
# A minimal JSON-over-HTTP client (setup calls only; load goes through loadgen).
# --------------------------------------------------------------------------- #
@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


def http(method: str, url: str, *, body=None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> Response:
    assert_loopback(url)
    data = None
    hdrs = {"Accept": "application/json"}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def wait_http_200(url: str, deadline_s: float, proc=None) -> float:
    """Poll url until it answers 200; return the monotonic time it did.

    Raises if the deadline passes or if `proc` (a Popen) exits first.
    """
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"server exited with code {proc.returncode} before answering {url}")
        try:
            if http("GET", url, timeout=2.0).status == 200:
                return time.monotonic()
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.02)
    raise BenchError(f"{url} did not answer 200 within {deadline_s:.0f}s")


# --------------------------------------------------------------------------- #
# Processes and memory.
# --------------------------------------------------------------------------- #
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; ppid follows it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if Path(f"/proc/{p}").exists():
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


def tree_rss_bytes(pid: int) -> tuple[int, list[int]]:
    """Sum of RSS over pid and all its descendants, and the pids counted."""
    pids = process_tree(pid)
    return sum(rss_bytes(p) for p in pids), pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- #
# bcrypt cost, read back from a SQLite database so the equal-cost claim is
# checked rather than assumed.
# --------------------------------------------------------------------------- #
_BCRYPT_RE = re.compile(r"\$2[abxy]?\$(\d\d)\$")


def bcrypt_costs_in_sqlite(path: Path) -> set[int]:
    costs: set[int] = set()
    try:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                return costs
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except (OSError, sqlite3.Error):
        return costs
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]
            for c in cols:
                try:
                    rows = con.execute(
                        f'SELECT "{c}" FROM "{t}" WHERE typeof("{c}")=\'text\' '
                        f'AND "{c}" LIKE \'$2%$%$%\' LIMIT 20').fetchall()
                except sqlite3.Error:
                    continue
                for (v,) in rows:
                    m = _BCRYPT_RE.search(v)
                    if m:
                        costs.add(int(m.group(1)))
    except sqlite3.Error:
        pass
    finally:
        con.close()
    return costs


def bcrypt_costs_under(directory: Path, max_files: int = 5000) -> set[int]:
    """bcrypt costs of the password hashes in any SQLite file under directory.

    Shallow files first: the database normally sits at the top of a data dir,
    which may also hold thousands of unrelated files (images, guests).
    """
    costs: set[int] = set()
    files = sorted((p for p in directory.rglob("*") if p.is_file()),
                   key=lambda p: (len(p.relative_to(directory).parts), str(p)))
    for p in files[:max_files]:
        if p.stat().st_size >= 512 and not p.name.endswith(("-wal", "-shm", "-journal")):
            costs |= bcrypt_costs_in_sqlite(p)
    return costs


@dataclass
class SideResult:
    """Everything measured for one server (keystone or tinystack)."""

    name: str
    ok: bool = False
    error: str | None = None
    info: dict = field(default_factory=dict)        # versions, settings, notes
    load: dict = field(default_factory=dict)        # scenario -> loadgen.Result.as_dict()
    startup_first_s: float | None = None
    startup_second_s: float | None = None
    idle_rss_bytes: int | None = None                # after the load figures
    idle_rss_pids: list[int] = field(default_factory=list)
    start_rss_bytes: int | None = None               # after the second start, before load
