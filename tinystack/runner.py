"""Runs one tinystack process, and finds or stops the one running on a data dir.

``serve(settings)`` is the foreground ``tinystack up``: it refuses a second
instance on the same data dir, takes the port before anything slow happens,
writes the pid file, starts ``Cloud`` and serves ``cloud.asgi`` with uvicorn in
the same asyncio loop, and on SIGINT or SIGTERM stops uvicorn, then the cloud,
then removes the pid file. ``start_detached`` and ``wait_until_healthy`` are
``tinystack up -d``; ``stop_running`` is ``tinystack down``.

Once the cloud has stopped, worker threads get ``THREADS_GRACE`` seconds to
finish; one still busy after that is a bug, named in the log, and the process
leaves without it rather than hang on exit.

Liveness is read from the state field of ``/proc/PID/stat``, never from
``kill -0``: PID 1 reaps orphans late on the machines we run on, and a zombie
is as dead as a process gets.

This module imports nothing heavy at the top, so the CLI can use its helpers
without paying for the cloud; ``cloud.py`` and uvicorn are imported only by
``serve``. The words a person reads (messages, tables) are in ``cli.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tinystack.common.process import pid_alive

if TYPE_CHECKING:
    from tinystack.config import Settings

__all__ = [
    "STOP_TIMEOUT",
    "AlreadyRunning",
    "PortTaken",
    "RunnerError",
    "StartFailed",
    "bind_socket",
    "configure_logging",
    "get_health",
    "instance_url",
    "local_url",
    "log_tail",
    "pid_alive",
    "read_pid",
    "running_pid",
    "serve",
    "start_detached",
    "stop_running",
    "url_file",
    "wait_for_exit",
    "wait_until_healthy",
]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0
"""Seconds ``Cloud.stop`` may take before the process gives up on it."""
THREADS_GRACE = 5.0
"""Seconds worker threads and leftover tasks get to finish once the cloud has stopped."""


class RunnerError(Exception):
    """Something a person must fix before tinystack can run; the message says what."""


class AlreadyRunning(RunnerError):
    def __init__(self, pid: int, data_dir: Path):
        super().__init__(
            f"tinystack is already running on data dir {data_dir} (pid {pid}); "
            f"stop it with `tinystack down --data-dir {data_dir}` or use another --data-dir"
        )
        self.pid = pid


class PortTaken(RunnerError):
    def __init__(self, host: str, port: int):
        super().__init__(
            f"port {port} on {host} is already in use by another program; "
            "stop it or choose another port with --port"
        )


class StartFailed(RunnerError):
    """The detached process died or never answered; ``log_tail`` says why."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


# -- finding the running instance ---------------------------------------------




def read_pid(pid_file: Path) -> int | None:
    """The pid written in ``pid_file``, or None if there is no readable one."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(settings: Settings) -> int | None:
    """The pid of the live tinystack on ``settings.data_dir``, not counting this process."""
    pid = read_pid(settings.pid_file)
    if pid is None or pid == os.getpid() or not pid_alive(pid):
        return None
    return pid


def url_file(settings: Settings) -> Path:
    """Where a running instance records the URL it answers on, beside the pid file."""
    return settings.data_dir / "tinystack.url"


def local_url(settings: Settings) -> str:
    """http://HOST:PORT as a client on this machine reaches the configured listener."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def instance_url(settings: Settings, *, prefer_settings: bool = False) -> str:
    """The URL of the instance on this data dir: the one it recorded, else the settings'."""
    if not prefer_settings and running_pid(settings) is not None:
        with contextlib.suppress(OSError):
            recorded = url_file(settings).read_text().strip()
            if recorded:
                return recorded
    return local_url(settings)


def get_health(url: str, timeout: float = 2.0) -> tuple[int | None, dict | None]:
    """GET URL/healthcheck: (status, body), or (None, None) if nothing answers."""
    import http.client

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", "/healthcheck", headers={"Accept": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        conn.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return response.status, body if isinstance(body, dict) else None


# -- the foreground process -----------------------------------------------------


def bind_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket bound to HOST:PORT (listening unless told not to).

    Listening at once makes the port ours: a client that connects while the
    cloud is still starting waits in the backlog instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only
    # for sockets made so, and without it every response waits out a 40 ms
    # delayed ACK between its header and body writes.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortTaken(host, port) from None
        raise RunnerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove_run_files(settings: Settings, pid: int) -> None:
    """Remove the pid and URL files if they still belong to ``pid``."""
    if read_pid(settings.pid_file) == pid:
        with contextlib.suppress(FileNotFoundError):
            url_file(settings).unlink()
        with contextlib.suppress(FileNotFoundError):
            settings.pid_file.unlink()


def configure_logging(level: str) -> None:
    """Log lines with a timestamp to stderr (the log file when detached)."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if logging.getLogger().level > logging.DEBUG:
        # one line per migration step and per request between services is noise at INFO
        for name in ("alembic.runtime.plugins", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)


def serve(settings: Settings, *, access_log: bool = False) -> int:
    """Run tinystack in this process until SIGINT or SIGTERM; the exit code.

    Raises ``RunnerError`` before starting anything if another instance runs on
    the data dir or the port is taken.
    """
    pid = running_pid(settings)
    if pid is not None:
        raise AlreadyRunning(pid, settings.data_dir)
    sock = bind_socket(settings.host, settings.port)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(settings.pid_file, f"{os.getpid()}\n")
        _write_atomically(url_file(settings), local_url(settings) + "\n")
        # Start-up makes some 250,000 objects that live as long as the process, and
        # the cycle collector would walk them hundreds of times on the way (a tenth
        # of the start-up time); ``_settle_gc`` turns it back on once the cloud runs.
        gc.disable()
        # httpx imports its command-line client (rich, pygments: 3 MB, 30 ms) when
        # it can; a server never runs it, and httpx carries on without it.
        sys.modules.setdefault("httpx._main", None)
        code, threads_done = _run_loop(_serve(settings, sock, access_log))
    finally:
        gc.enable()
        sock.close()
        _remove_run_files(settings, os.getpid())
    log.info("tinystack stopped")
    if not threads_done:
        _exit_now(code)
    return code


def _run_loop(main: Coroutine[Any, Any, int]) -> tuple[int, bool]:
    """``asyncio.run(main)`` that will not hang on a worker thread still busy at the end.

    Returns main's result and whether every worker thread finished within
    ``THREADS_GRACE`` seconds after the cloud stopped. (``asyncio.run`` would
    join them for as long as they take.)
    """
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="tinystack-worker")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        code = loop.run_until_complete(main)
        loop.run_until_complete(_cancel_leftover_tasks())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        asyncio.set_event_loop(None)
        loop.close()
    return code, _threads_finish(THREADS_GRACE)


async def _cancel_leftover_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if not tasks:
        return
    log.warning("cancelling %d task(s) left running after stop: %s",
                len(tasks), ", ".join(t.get_name() for t in tasks))
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=THREADS_GRACE)


def _busy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()]


def _threads_finish(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for thread in _busy_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    return not _busy_threads()


def _exit_now(code: int) -> None:
    """Leave without joining threads that outlived the cloud (a bug, named in the log)."""
    busy = [t.name for t in _busy_threads()]
    log.warning("worker threads still busy %.0f s after stop, exiting without them: %s",
                THREADS_GRACE, ", ".join(busy) or "?")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _serve(settings: Settings, sock: socket.socket, access_log: bool) -> int:
    import uvicorn

    from tinystack.cloud import Cloud
    from tinystack.common.sendfile import HttpProtocol

    class Server(uvicorn.Server):
        # Signals are ours (below): uvicorn would re-raise them after shutdown,
        # killing the process before the cloud has stopped.
        def capture_signals(self):
            return contextlib.nullcontext()

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    server: Server | None = None

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            log.warning("%s again: not waiting for open connections", name)
            if server is not None:
                server.force_exit = True
            return
        log.info("%s: stopping", name)
        stopping.set()
        if server is not None:
            server.should_exit = True

    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    cloud = Cloud(settings)
    code = 0
    try:
        log.info("starting tinystack (pid %d, roles %s, data dir %s)",
                 os.getpid(), ",".join(settings.roles), settings.data_dir)
        started = await _unless_stopped(cloud.start(), stopping)
        _settle_gc()
        if not started:
            return 0
        config = uvicorn.Config(
            cloud.asgi,
            http=HttpProtocol,
            lifespan="off",
            access_log=access_log,
            log_config=None,
            log_level=settings.log_level.lower(),
            server_header=False,
            timeout_graceful_shutdown=10,
        )
        server = Server(config)
        server.should_exit = stopping.is_set()
        log.info("tinystack serving on %s", local_url(settings))
        await server.serve(sockets=[sock])
    except Exception:
        log.exception("tinystack failed")
        code = 1
    finally:
        code = max(code, await _stop_cloud(cloud))
        for signum in handled:
            loop.remove_signal_handler(signum)
    return code


def _settle_gc() -> None:
    """Move what start-up made out of the cycle collector's way, then turn it back on.

    ``gc.freeze`` is not a collection: it costs next to nothing, and later
    collections only walk objects made since, which keeps their pauses short.
    The two thousand or so objects start-up left as cyclic garbage (a few
    hundred kB) stay frozen with the rest.
    """
    gc.freeze()
    gc.enable()


async def _unless_stopped(work: Awaitable[Any], stopping: asyncio.Event) -> bool:
    """Await ``work`` unless ``stopping`` is set first (then cancel it): did it finish?"""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _stop_cloud(cloud: Any) -> int:
    try:
        await asyncio.wait_for(cloud.stop(), STOP_TIMEOUT)
    except asyncio.TimeoutError:
        log.error("the cloud did not stop within %.0f s", STOP_TIMEOUT)
        return 1
    except Exception:
        log.exception("stopping the cloud failed")
        return 1
    return 0


# -- detached start and stop ------------------------------------------------------


def start_detached(argv: list[str], log_file: Path) -> tuple[subprocess.Popen, int]:
    """Start ``python -m tinystack ARGV`` in a new session, output to ``log_file``.

    Returns the process and the log file's size before it started, so a caller
    can show what this start wrote.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # glibc gives each thread that allocates its own malloc arena, and each keeps
    # what it once held: with two, the idle server is a few MB smaller after load,
    # at no cost the identity bench could see. A value the caller set wins.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    with open(log_file, "ab") as out:
        offset = out.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "tinystack", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    return process, offset


def log_tail(log_file: Path, offset: int = 0, lines: int = 40) -> str:
    """The last ``lines`` lines written to ``log_file`` after ``offset``."""
    try:
        with open(log_file, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until_healthy(
    url: str, process: subprocess.Popen, log_file: Path, offset: int,
    timeout: float = 60.0, interval: float = 0.05,
) -> dict:
    """Poll URL/healthcheck until it answers 200; its body.

    Raises ``StartFailed`` with the log tail if ``process`` exits first or
    nothing healthy answers within ``timeout`` (then the process is stopped).
    """
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise StartFailed(f"tinystack exited with code {code} while starting",
                              log_tail(log_file, offset))
        status, body = get_health(url, timeout=2.0)
        if status == 200:
            return body or {}
        if time.monotonic() > deadline:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
            raise StartFailed(
                f"tinystack did not become healthy at {url} within {timeout:.0f} s "
                f"(last answer: {status or 'none'}); it has been stopped",
                log_tail(log_file, offset),
            )
        time.sleep(interval)


def wait_for_exit(pid: int, timeout: float, interval: float = 0.05) -> bool:
    """Wait until ``pid`` is gone or a zombie; False if it still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def stop_running(settings: Settings, timeout: float = STOP_TIMEOUT + 10) -> tuple[int | None, bool]:
    """SIGTERM the instance on the data dir and wait; SIGKILL it after ``timeout``.

    Returns (pid, killed): pid None when nothing was running. Raises
    ``RunnerError`` if even SIGKILL did not end it.
    """
    pid = running_pid(settings)
    if pid is None:
        stale = read_pid(settings.pid_file)
        if stale is not None and stale != os.getpid():
            _remove_run_files(settings, stale)
        return None, False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    killed = False
    if not wait_for_exit(pid, timeout):
        killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_for_exit(pid, 10):
            raise RunnerError(f"tinystack (pid {pid}) survived SIGKILL; it is stuck in the kernel")
    _remove_run_files(settings, pid)
    return pid, killed
