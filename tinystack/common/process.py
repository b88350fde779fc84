"""What /proc says about a process: alive (not a zombie) and its command line.

The runner, the compute agent and the network agents all ask this. PID 1
reaps orphans late here, and ``kill -0`` succeeds on a zombie, so liveness is
read from the state field of ``/proc/PID/stat``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["pid_alive", "process_cmdline"]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a process that is neither dead nor a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
    state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]
    return state not in ("", "Z", "X", "x")


def process_cmdline(pid: int) -> list[str]:
    """The argv of ``pid``, or an empty list when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
