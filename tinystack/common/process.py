"""Child processes of the agents, and what /proc says about any process.

``run_command`` runs a command to its end (with a deadline, killed if the
caller is cancelled) and ``start_child`` starts a long-lived one in its own
session; the compute and network agents' host layers use both, each with its
own error type. ``pid_alive`` and ``process_cmdline`` are for the runner and
the agents alike: PID 1 reaps orphans late here, and ``kill -0`` succeeds on
a zombie, so liveness is read from the state field of ``/proc/PID/stat``.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

__all__ = ["CommandFailed", "pid_alive", "process_cmdline", "run_command", "start_child"]

ERROR_TAIL = 800
"""Characters of a failed command's stderr (its end) kept in the error."""


class CommandFailed(Exception):
    """A command could not start, took too long or exited non-zero; the message says which."""


def _named(argv: list[str]) -> str:
    return " ".join(argv[:4])


async def run_command(argv: list[str], *, timeout: float, cwd: Path | None = None,
                      stdin: bytes | None = None,
                      error: type[Exception] = CommandFailed) -> str:
    """Run ``argv`` to its end, ``stdin`` on its standard input; its stdout.

    ``error`` (with the end of its stderr, or stdout) when it cannot start, exits non-zero
    or outlives ``timeout`` seconds (it is killed then, and when the caller is cancelled).
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise error(f"{argv[0]}: {exc.strerror}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise error(f"{_named(argv)} took longer than {timeout:g} s") from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        words = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        raise error(f"{_named(argv)} exited {proc.returncode}: {words[-ERROR_TAIL:]}")
    return out.decode(errors="replace")


async def start_child(argv: list[str], *, log_path: Path, cwd: Path | None = None,
                      error: type[Exception] = CommandFailed) -> asyncio.subprocess.Process:
    """Start ``argv`` as our child in its own session, stdout and stderr to ``log_path``.

    Its own session: a signal to our process group (Ctrl-C) does not reach it, so what an
    agent started outlives the agent's restart and is adopted by the next one.
    """
    with open(log_path, "ab") as out:
        try:
            return await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        except OSError as exc:
            raise error(f"{argv[0]}: {exc.strerror}") from None


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
