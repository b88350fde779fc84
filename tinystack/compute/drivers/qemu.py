"""The QEMU driver: each server a qemu process the agent starts, watches and can adopt.

Everything of server ``S`` lives in ``<instances>/S/`` (``<data_dir>/compute/
instances/S``): ``disk`` (a qcow2 overlay on a base image from the node's
cache, ``image_cache.py``), ``disk.eph0``, ``disk.config`` (the config drive,
``config_drive.py``), ``console.log`` (the serial console, written by QEMU
itself: ``logfile=`` on the console socket keeps every byte whether or not
anyone reads the socket, so the guest never stalls and an agent restart loses
nothing), ``qemu.log`` (QEMU's own words), ``qemu.pid``, ``qmp.sock`` and
``console.sock``, ``memory.state`` while suspended, and ``guest.json`` (the
command line, taps and launch time of the current process). Removing a
server is: kill its process, delete its taps, remove that directory.

What this driver owns is provable: a qemu whose command line carries
``-pidfile <instances>/S/qemu.pid``, a tap whose alias is ``tinystack server
S``, files under ``<instances>/``. A restarted agent finds its guests by the
pid file, checks ``/proc/PID/cmdline`` and talks to them over ``qmp.sock``
(QMP, the ``qemu.qmp`` package): that is adoption. Processes this driver
started are its children and are waited on; adopted ones are checked through
``/proc/PID/stat`` (a zombie is dead).

A guest starts paused (``-S``): the driver plugs its taps (QEMU makes them,
one per port, and they vanish with the process), then lets it run, over the
one QMP connection it made when QEMU first answered, and tells the agent the
guest runs (no further round trip). Power
actions are QMP commands: ``stop``/``cont`` (pause), ``system_powerdown``
(clean stop, ``quit`` after a timeout), ``system_reset`` (hard reboot), a soft
reboot is a clean power-down caught with ``set-action shutdown=pause`` and a
reset, suspend is a migration of the paused guest to ``memory.state``. A
resize grows the disks (``qemu-img resize``) and restarts a running guest whose
``-smp``/``-m`` differ from the flavor's. A snapshot of a running guest is a ``drive-backup`` block job (a stopped one is
a ``qemu-img convert``), uploaded with ``image_cache.upload_image``; a rebuild
removes the root disk and config drive and makes them again. The serial port
is offered over TCP by ``serial_ports.py``. TCG
runs with a 32 MiB translation cache and a free-page-reporting balloon to keep
qemu's own memory small; KVM is used when ``accelerator.py`` says it boots.

All privileged work goes through ``host.py``; the agent above is ``agent.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shlex
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from tinystack.compute import accelerator, host
from tinystack.compute.config_drive import build_config_drive
from tinystack.compute.drivers.base import (
    CAPABILITIES,
    NodeResources,
    PermanentFailure,
    ServerGone,
    ServerStatus,
    TemporaryFailure,
)
from tinystack.compute.image_cache import ImageCache, upload_image
from tinystack.compute.messages import ImageRef, PortBinding, ServerSpec
from tinystack.compute.qemu_command import GUEST_PREFIX, InstancePaths, qemu_argv, tap_name
from tinystack.compute.serial_ports import SerialPorts

__all__ = ["QemuDriver", "QemuOptions", "tap_name"]

log = logging.getLogger(__name__)
logging.getLogger("qemu.qmp").setLevel(logging.WARNING)

_POWER_OF_STATUS = {
    "running": "running", "paused": "paused", "suspended": "paused", "postmigrate": "paused",
    "finish-migrate": "paused", "save-vm": "paused", "restore-vm": "paused", "debug": "paused",
    "io-error": "paused", "watchdog": "paused", "colo": "paused", "prelaunch": "nostate",
    "inmigrate": "nostate", "shutdown": "shutdown", "internal-error": "crashed",
    "guest-panicked": "crashed",
}
_CONSOLE_TAIL = 1 << 20


@dataclass(frozen=True)
class QemuOptions:
    """Where the driver keeps things and how it runs QEMU (from ``ComputeSettings``)."""

    instances_dir: Path
    images_dir: Path
    state_dir: Path
    """For node-wide files (the accelerator probe's result)."""
    binary: str = "qemu-system-x86_64"
    accelerator: str = "auto"
    """``auto`` (TCG now, KVM if a background probe boots), ``kvm`` or ``tcg``."""
    machine: str = "pc"
    tb_size_mb: int = 32
    qmp_timeout: float = 10.0
    start_timeout: float = 30.0
    download_timeout: float = 30.0
    my_ip: str = "127.0.0.1"
    """Where serial console ports listen (the controller's console proxy connects there)."""


def _alias(server_id: str) -> str:
    return f"tinystack server {server_id}"


def _hardware(argv: list[str]) -> tuple[int, int] | None:
    """(vCPUs, MiB) a qemu command line gives its guest; None if it does not say."""
    try:
        vcpus = int(argv[argv.index("-smp") + 1].split(",")[0])
        memory = argv[argv.index("-m") + 1]
        return vcpus, int(memory.removesuffix("M"))
    except (ValueError, IndexError):
        return None


class QemuDriver:
    """``ComputeDriver`` on QEMU; see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(self, options: QemuOptions):
        self.options = options
        self.images = ImageCache(options.images_dir, timeout=options.download_timeout)
        self.accelerator = "kvm" if options.accelerator == "kvm" else "tcg"
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task] = set()
        self._qmp_locks: dict[str, asyncio.Lock] = {}
        self._listener: Callable[[str], None] | None = None
        self._kernel_cached = asyncio.Event()
        self._consoles = SerialPorts(options.my_ip)
        self._version: tuple[str, int] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.options.instances_dir.mkdir(parents=True, exist_ok=True)
        self.images.clean()
        if self.options.accelerator == "auto" and host.kvm_available():
            self._spawn(self._probe_kvm())

    async def close(self) -> None:
        self._consoles.close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def watch(self, callback: Callable[[str], None]) -> None:
        self._listener = callback

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _probe_kvm(self) -> None:
        version = await host.qemu_version(self.options.binary)
        result_file = self.options.state_dir / "accelerator.json"
        known = accelerator.remembered(result_file, version)
        if known is None:
            kernels = self.images.cached("kernel")
            while not kernels:
                await self._kernel_cached.wait()
                kernels = self.images.cached("kernel")
            boots = await accelerator.kvm_boots(self.options.binary, kernels[0],
                                                self.options.state_dir)
            known = "kvm" if boots else "tcg"
            accelerator.remember(result_file, version, known)
        if known != self.accelerator:
            log.info("compute: KVM boots a guest here; new guests use it")
        self.accelerator = known

    # -- finding what we own ----------------------------------------------------------------

    def _paths(self, server_id: str) -> InstancePaths:
        return InstancePaths(self.options.instances_dir / server_id)

    def _live_pid(self, server_id: str) -> int | None:
        """The pid of the server's qemu if one runs (our child or adopted), else None."""
        child = self._children.get(server_id)
        if child is not None and child.returncode is None and host.pid_alive(child.pid):
            return child.pid
        paths = self._paths(server_id)
        try:
            pid = int(paths.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if host.pid_alive(pid) and str(paths.pidfile) in host.process_cmdline(pid):
            return pid
        return None

    def _strays(self, server_id: str) -> list[int]:
        """Every live qemu of this server, pid file or not (a build killed at any point)."""
        return host.find_processes(str(self._paths(server_id).pidfile))

    async def list_servers(self) -> list[str]:
        ids = set()
        if self.options.instances_dir.exists():
            ids.update(p.name for p in self.options.instances_dir.iterdir() if p.is_dir())
        ids.update(self._children)
        return sorted(ids)

    def _guest_record(self, server_id: str) -> dict:
        try:
            return json.loads(self._paths(server_id).guest.read_text())
        except (OSError, ValueError):
            return {}

    # -- QMP --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _monitor(self, server_id: str, timeout: float | None = None) -> AsyncIterator:
        """A connected QMP client for the server's qemu (one at a time per server)."""
        from qemu.qmp import QMPClient  # noqa: PLC0415 - compute nodes only

        lock = self._qmp_locks.setdefault(server_id, asyncio.Lock())
        async with lock:
            client = QMPClient(f"{GUEST_PREFIX}{server_id}")
            try:
                async with asyncio.timeout(timeout or self.options.qmp_timeout):
                    with host.unix_socket_path(self._paths(server_id).qmp) as address:
                        await client.connect(address)
                yield client
            except (OSError, TimeoutError, EOFError) as exc:
                raise TemporaryFailure(f"QEMU of server {server_id} does not answer: "
                                       f"{exc or type(exc).__name__}") from None
            except Exception as exc:
                if type(exc).__module__.startswith("qemu.qmp"):
                    raise TemporaryFailure(f"QEMU of server {server_id}: {exc}") from None
                raise
            finally:
                with contextlib.suppress(Exception):
                    await client.disconnect()

    async def _qmp(self, server_id: str, command: str, **arguments):
        async with self._monitor(server_id) as client:
            return await self._execute(client, command, **arguments)

    async def _execute(self, client, command: str, **arguments):
        """One command on a client ``_monitor`` connected (its failures sorted there)."""
        async with asyncio.timeout(self.options.qmp_timeout):
            return await client.execute(command, arguments or None)

    async def _run_status(self, server_id: str) -> str:
        return (await self._qmp(server_id, "query-status"))["status"]

    # -- inspect ----------------------------------------------------------------------------

    async def inspect_server(self, server_id: str) -> ServerStatus | None:
        paths = self._paths(server_id)
        pid = self._live_pid(server_id)
        if pid is None and not paths.dir.exists():
            return None
        record = self._guest_record(server_id)
        console = str(paths.console_log)
        if pid is not None:
            try:
                power = _POWER_OF_STATUS.get(await self._run_status(server_id), "nostate")
                if paths.state.exists():
                    power = "nostate"   # resumed but not let run: power_on finishes it
            except TemporaryFailure:
                if self._live_pid(server_id) is None:
                    return await self.inspect_server(server_id)
                power = "nostate"
            return ServerStatus(server_id, power, launched_at=record.get("launched_at"),
                                console_log=console,
                                details={"pid": pid, "accelerator": record.get("accelerator")})
        if paths.state.exists():
            power = "suspended"
        elif paths.disk.exists():
            power = "shutdown"
        else:
            power = "nostate"
        return ServerStatus(server_id, power, console_log=console)

    # -- build ------------------------------------------------------------------------------

    async def ensure_server(self, spec: ServerSpec) -> None:
        paths = self._paths(spec.id)
        paths.dir.mkdir(parents=True, exist_ok=True)
        if spec.image is None:
            raise PermanentFailure("the server has no image to boot from")
        if not paths.disk.exists():
            await self._make_root_disk(spec, paths)
        await self._boot_files(spec.image, spec.token)
        if spec.ephemeral_gb and not paths.ephemeral.exists():
            part = paths.dir / "disk.eph0.part"
            await self._host(host.qemu_img_create(part, size=spec.ephemeral_gb * 2**30))
            os.replace(part, paths.ephemeral)
        if spec.config_drive and not paths.config.exists():
            await build_config_drive(spec.metadata_files, paths.config)

    async def _make_root_disk(self, spec: ServerSpec, paths: InstancePaths) -> None:
        base = await self.images.fetch(spec.image, spec.token, kind="disk")
        wanted = spec.root_gb * 2**30
        if wanted and base.virtual_size > wanted:
            raise PermanentFailure(
                f"image {spec.image.id} needs a root disk of {base.virtual_size / 2**30:.1f} GiB;"
                f" the flavor gives {spec.root_gb} GiB: choose a larger flavor")
        part = paths.dir / "disk.part"
        part.unlink(missing_ok=True)
        await self._host(host.qemu_img_create(part, size=max(wanted, base.virtual_size),
                                              backing=base.path, backing_format=base.format))
        os.replace(part, paths.disk)

    async def _boot_files(self, image: ImageRef, token: str) -> tuple[Path | None, Path | None]:
        """The cached kernel and ramdisk the image boots with (None, None for a disk boot)."""
        found: list[Path | None] = []
        for kind, image_id, ref in (("kernel", image.kernel_id, image.kernel),
                                    ("ramdisk", image.ramdisk_id, image.ramdisk)):
            if ref is None and image_id:
                ref = ImageRef(id=image_id, disk_format="aki" if kind == "kernel" else "ari",
                               download_url=image.download_url.replace(image.id, image_id))
            if ref is None:
                found.append(None)
                continue
            found.append((await self.images.fetch(ref, token, kind=kind)).path)
            if kind == "kernel":
                self._kernel_cached.set()
        return found[0], found[1]

    @staticmethod
    async def _host(operation) -> None:
        try:
            await operation
        except host.HostError as exc:
            raise TemporaryFailure(str(exc)) from None

    # -- start ------------------------------------------------------------------------------

    async def power_on(self, spec: ServerSpec) -> ServerStatus | None:
        paths = self._paths(spec.id)
        pid = self._live_pid(spec.id)
        if pid is not None:
            async with self._monitor(spec.id) as client:
                status = (await self._execute(client, "query-status"))["status"]
                resuming = paths.state.exists()
                if status in ("prelaunch", "inmigrate") or resuming:  # an agent died before cont
                    await self._let_run(spec, paths, client, resuming=resuming)
                    status = "running"
            if status == "running":
                return self._running_status(spec.id, pid)
            return None
        await self.ensure_server(spec)
        resuming = paths.state.exists()
        record = self._guest_record(spec.id)
        if resuming and record.get("argv"):
            base = record["argv"]
            argv = [*base, "-incoming", f"exec:cat {shlex.quote(str(paths.state))}"]
        else:
            resuming = False
            base = argv = await self._argv(spec, paths)
        record = {"argv": base, "taps": [tap_name(p) for p in spec.ports],
                  "accelerator": self.accelerator,
                  "launched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        paths.guest.write_text(json.dumps(record))
        for stale in (paths.qmp, paths.console, paths.pidfile):
            stale.unlink(missing_ok=True)
        proc = await self._start(spec.id, argv, paths)
        try:
            # One QMP connection from the first answer to `cont` (each connect is a
            # greeting and a capabilities exchange, slow while other guests boot).
            async with contextlib.AsyncExitStack() as stack:
                client = await self._wait_for_monitor(spec.id, proc, paths, stack)
                await self._let_run(spec, paths, client, resuming=resuming)
        except BaseException:
            await asyncio.shield(self._kill(spec.id))
            raise
        # `cont` succeeded: the guest runs; the agent needs no QMP round trip to know it.
        return self._running_status(spec.id, proc.pid, record)

    def _running_status(self, server_id: str, pid: int, record: dict | None = None) -> ServerStatus:
        """What ``inspect_server`` would say of a guest that was just let run."""
        record = record if record is not None else self._guest_record(server_id)
        return ServerStatus(server_id, "running", launched_at=record.get("launched_at"),
                            console_log=str(self._paths(server_id).console_log),
                            details={"pid": pid, "accelerator": record.get("accelerator")})

    async def _argv(self, spec: ServerSpec, paths: InstancePaths) -> list[str]:
        kernel, ramdisk = await self._boot_files(spec.image, spec.token)
        return qemu_argv(spec, paths, binary=self.options.binary, machine=self.options.machine,
                         accelerator=self.accelerator, tb_size_mb=self.options.tb_size_mb,
                         kernel=kernel, ramdisk=ramdisk)

    async def _start(self, server_id: str, argv: list[str], paths: InstancePaths):
        try:
            proc = await host.start_process(argv, cwd=paths.dir, log_path=paths.qemu_log)
        except host.HostError as exc:
            raise PermanentFailure(f"could not run QEMU: {exc}") from None
        self._children[server_id] = proc
        self._spawn(self._reap(server_id, proc))
        return proc

    async def _reap(self, server_id: str, proc) -> None:
        """Wait for our child to end; tell the agent (the guest powered off, or crashed)."""
        await proc.wait()
        if self._children.get(server_id) is proc:
            del self._children[server_id]
        log.info("compute: qemu of server %s exited (%s)", server_id, proc.returncode)
        if self._listener is not None:
            self._listener(server_id)

    async def _wait_for_monitor(self, server_id: str, proc, paths: InstancePaths,
                                stack: contextlib.AsyncExitStack):
        """A QMP client of the qemu just started, connected as soon as it answers; it stays
        connected (holding the server's QMP lock) until ``stack`` closes."""
        deadline = time.monotonic() + self.options.start_timeout
        while True:
            if proc.returncode is not None or not host.pid_alive(proc.pid):
                raise PermanentFailure(f"QEMU could not start the guest: {self._log_tail(paths)}")
            if paths.qmp.exists():
                try:
                    return await stack.enter_async_context(self._monitor(server_id))
                except TemporaryFailure:
                    pass
            if time.monotonic() > deadline:
                raise TemporaryFailure(f"QEMU of server {server_id} did not answer within "
                                       f"{self.options.start_timeout:g} s")
            await asyncio.sleep(0.02)

    @staticmethod
    def _log_tail(paths: InstancePaths) -> str:
        try:
            lines = paths.qemu_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no output"
        return " ".join(lines[-3:])[-500:] or "no output"

    async def _let_run(self, spec: ServerSpec, paths: InstancePaths, client, *,
                       resuming: bool) -> None:
        """Finish an incoming migration, plug the taps, and let the CPUs go (over ``client``,
        a connected QMP client of the server's qemu)."""
        if resuming:
            deadline = time.monotonic() + self.options.start_timeout * 4
            while (await self._execute(client, "query-status"))["status"] == "inmigrate":
                if time.monotonic() > deadline:
                    raise TemporaryFailure(f"resuming server {spec.id} takes too long")
                await asyncio.sleep(0.05)
        for port in spec.ports:
            await self._plug(spec.id, port)
        paths.state.unlink(missing_ok=True)   # the memory is in the guest now
        await self._execute(client, "cont")

    async def _plug(self, server_id: str, port: PortBinding) -> None:
        tap = tap_name(port)
        try:
            await host.set_link(tap, up=True, mtu=port.mtu, alias=_alias(server_id))
            if port.bridge:
                bridge = await host.link_info(port.bridge)
                if bridge is None:
                    raise TemporaryFailure(f"bridge {port.bridge} of port {port.port_id} "
                                           "does not exist (yet)")
                info = await host.link_info(tap)
                if info is None or info["master"] != bridge["index"]:
                    await host.add_link_to_bridge(tap, port.bridge)
        except host.HostError as exc:
            raise TemporaryFailure(f"could not plug port {port.port_id}: {exc}") from None

    # -- power ------------------------------------------------------------------------------

    async def power_off(self, server_id: str, *, timeout: float) -> None:
        paths = self._paths(server_id)
        pid = self._live_pid(server_id)
        self._close_console(server_id)
        if pid is None:
            paths.state.unlink(missing_ok=True)   # stopping a suspended guest forgets its memory
            return
        with contextlib.suppress(TemporaryFailure):
            if await self._run_status(server_id) in ("running",):
                await self._qmp(server_id, "system_powerdown")
                if await self._wait_exit(server_id, pid, timeout):
                    return
        await self._kill(server_id)

    async def reboot(self, server_id: str, *, hard: bool, timeout: float) -> None:
        if self._live_pid(server_id) is None:
            raise ServerGone(f"server {server_id} is not running")
        if hard:
            await self._qmp(server_id, "system_reset")
            return
        await self._qmp(server_id, "set-action", shutdown="pause")
        try:
            await self._qmp(server_id, "system_powerdown")
            deadline = time.monotonic() + timeout
            while await self._run_status(server_id) != "shutdown":
                if time.monotonic() > deadline:
                    log.info("compute: server %s ignored the power button; resetting", server_id)
                    break
                await asyncio.sleep(0.1)
            await self._qmp(server_id, "system_reset")
            if await self._run_status(server_id) != "running":
                await self._qmp(server_id, "cont")
        finally:
            await self._qmp(server_id, "set-action", shutdown="poweroff")

    async def pause(self, server_id: str) -> None:
        await self._qmp(server_id, "stop")

    async def unpause(self, server_id: str) -> None:
        await self._qmp(server_id, "cont")

    async def suspend(self, server_id: str) -> None:
        paths = self._paths(server_id)
        pid = self._live_pid(server_id)
        if pid is None:
            raise ServerGone(f"server {server_id} is not running")
        part = paths.dir / "memory.state.part"
        part.unlink(missing_ok=True)
        await self._qmp(server_id, "stop")
        try:
            await self._qmp(server_id, "migrate", uri=f"exec:cat > {shlex.quote(str(part))}")
            deadline = time.monotonic() + self.options.start_timeout * 4
            while True:
                status = (await self._qmp(server_id, "query-migrate")).get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled") or time.monotonic() > deadline:
                    raise TemporaryFailure(f"saving the memory of server {server_id} {status}")
                await asyncio.sleep(0.05)
        except BaseException:
            part.unlink(missing_ok=True)
            with contextlib.suppress(TemporaryFailure):
                await self._qmp(server_id, "cont")
            raise
        os.replace(part, paths.state)
        await self._kill(server_id)

    async def _wait_exit(self, server_id: str, pid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the qemu to end; True if it did."""
        child = self._children.get(server_id)
        if child is not None and child.pid == pid:
            try:
                await asyncio.wait_for(asyncio.shield(child.wait()), timeout)
            except TimeoutError:
                return False
            return True
        deadline = time.monotonic() + timeout
        while host.pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _kill(self, server_id: str) -> None:
        """End every qemu of the server now (QMP ``quit``, then SIGKILL) and wait for it."""
        pids = set(self._strays(server_id))
        live = self._live_pid(server_id)
        if live is not None:
            pids.add(live)
            with contextlib.suppress(TemporaryFailure):
                async with self._monitor(server_id, timeout=2.0) as client:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.execute("quit"), 2.0)
        for pid in pids:
            if not await self._wait_exit(server_id, pid, 3.0 if pid == live else 0):
                host.kill(pid)
                if not await self._wait_exit(server_id, pid, 10.0):
                    raise TemporaryFailure(f"qemu {pid} of server {server_id} does not die")

    # -- remove -----------------------------------------------------------------------------

    async def remove_server(self, server_id: str) -> None:
        paths = self._paths(server_id)
        self._close_console(server_id)
        pids = set(self._strays(server_id))
        live = self._live_pid(server_id)
        if live is not None:
            pids.add(live)
        for pid in pids:
            host.kill(pid)
        for pid in pids:
            if not await self._wait_exit(server_id, pid, 10.0):
                raise TemporaryFailure(f"qemu {pid} of server {server_id} does not die")
        taps = set(self._guest_record(server_id).get("taps", []))
        try:
            taps.update(await host.links_with_alias(_alias(server_id)))
            for tap in taps:
                info = await host.link_info(tap)
                if info is not None and info["alias"] in ("", _alias(server_id)):
                    await host.delete_link(tap)
        except host.HostError as exc:
            raise TemporaryFailure(f"could not remove the taps of server {server_id}: {exc}") \
                from None
        await asyncio.to_thread(shutil.rmtree, paths.dir, True)
        self._qmp_locks.pop(server_id, None)

    # -- rebuild and snapshot ---------------------------------------------------------------

    async def rebuild_server(self, spec: ServerSpec) -> None:
        paths = self._paths(spec.id)
        self._close_console(spec.id)
        await self._kill(spec.id)
        for old in (paths.disk, paths.config, paths.state):
            old.unlink(missing_ok=True)
        await self.ensure_server(spec)

    async def resize_server(self, spec: ServerSpec, *, timeout: float) -> None:
        paths = self._paths(spec.id)
        if not paths.disk.exists():
            return
        grow = []
        for disk, gb in ((paths.disk, spec.root_gb), (paths.ephemeral, spec.ephemeral_gb)):
            if gb and disk.exists():
                try:
                    size = (await host.qemu_img_info(disk))["virtual-size"]
                except (host.HostError, KeyError) as exc:
                    raise TemporaryFailure(f"cannot read the size of {disk.name}: {exc}") \
                        from None
                if size < gb * 2**30:
                    grow.append((disk, gb * 2**30))
        running = self._live_pid(spec.id) is not None and not paths.state.exists()
        now = _hardware(self._guest_record(spec.id).get("argv") or [])
        restart = running and (bool(grow) or now not in (None, (spec.vcpus, spec.memory_mb))
                               or bool(spec.ephemeral_gb and not paths.ephemeral.exists()))
        if not grow and not restart:
            return
        log.info("compute: server %s gets %d vCPU, %d MiB, %d GiB%s", spec.id, spec.vcpus,
                 spec.memory_mb, spec.root_gb, "; restarting it" if restart else "")
        if restart:
            await self.power_off(spec.id, timeout=timeout)
        for disk, size in grow:
            await self._host(host.qemu_img_resize(disk, size))
        if restart:
            await self.power_on(spec)

    async def snapshot_server(self, server_id: str, *, upload_url: str, token: str,
                              disk_format: str = "qcow2") -> tuple[int, str]:
        paths = self._paths(server_id)
        if not paths.disk.exists():
            raise ServerGone(f"server {server_id} has no disk on this node")
        if disk_format not in ("qcow2", "raw"):
            raise PermanentFailure(f"cannot write a snapshot as {disk_format}")
        part = paths.dir / f"snapshot.{uuid.uuid4().hex[:8]}.part"
        try:
            if self._live_pid(server_id) is not None:
                await self._backup(server_id, part, disk_format)
            else:
                await self._host(host.qemu_img_convert(paths.disk, "qcow2", part, disk_format))
            return await upload_image(part, upload_url, token)
        finally:
            part.unlink(missing_ok=True)

    async def _backup(self, server_id: str, target: Path, disk_format: str) -> None:
        """A point-in-time copy of the running guest's root disk (QMP ``drive-backup``)."""
        job = f"snapshot-{target.stem}"
        await self._qmp(server_id, "drive-backup", device="root", sync="full",
                        target=str(target), format=disk_format, **{"job-id": job,
                                                                    "auto-dismiss": False})
        deadline = time.monotonic() + 3600
        while True:
            jobs = {j["id"]: j for j in await self._qmp(server_id, "query-jobs")}
            state = jobs.get(job)
            if state is None:
                raise TemporaryFailure(f"the snapshot job of server {server_id} vanished")
            if state["status"] == "concluded":
                await self._qmp(server_id, "job-dismiss", id=job)
                if state.get("error"):
                    raise TemporaryFailure(f"snapshot of server {server_id}: {state['error']}")
                return
            if time.monotonic() > deadline:
                raise TemporaryFailure(f"snapshot of server {server_id} takes too long")
            await asyncio.sleep(0.1)

    # -- serial console ---------------------------------------------------------------------

    async def serial_console(self, server_id: str) -> tuple[str, int]:
        if self._live_pid(server_id) is None:
            raise PermanentFailure(f"server {server_id} is not running")
        port = await self._consoles.open(server_id, self._paths(server_id).console)
        return self.options.my_ip, port

    def _close_console(self, server_id: str) -> None:
        self._consoles.close(server_id)

    # -- reading ----------------------------------------------------------------------------

    async def console_output(self, server_id: str, length: int | None = None) -> str:
        path = self._paths(server_id).console_log
        if not path.parent.exists():
            raise ServerGone(f"server {server_id} is not on this node")
        try:
            with open(path, "rb") as log_file:
                log_file.seek(max(0, os.fstat(log_file.fileno()).st_size - _CONSOLE_TAIL))
                text = log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        lines = text.replace("\r\n", "\n").replace("\r", "\n").splitlines()
        return "\n".join(lines[-length:] if length else lines)

    async def statistics(self, server_id: str) -> dict:
        pid = self._live_pid(server_id)
        if pid is None:
            return {}
        blocks = await self._qmp(server_id, "query-blockstats")
        balloon = await self._qmp(server_id, "query-balloon")
        disks = {}
        for entry in blocks:
            name = entry.get("device") or entry.get("qdev") or "?"
            stats = entry.get("stats", {})
            disks[name] = {k: stats.get(k, 0) for k in
                           ("rd_bytes", "wr_bytes", "rd_operations", "wr_operations")}
        return {"disks": disks, "balloon_bytes": balloon.get("actual"),
                "rss_bytes": host.process_rss_kib(pid) * 1024, "pid": pid}

    async def node_resources(self) -> NodeResources:
        if self._version is None:
            text = await host.qemu_version(self.options.binary)
            found = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", text)
            number = 0
            if found:
                major, minor, micro = (int(x or 0) for x in found.groups())
                number = major * 1000000 + minor * 1000 + micro
            self._version = (text, number)
        return NodeResources(
            vcpus=os.cpu_count() or 1, memory_mb=host.memory_total_mb(),
            local_gb=host.disk_total_gb(self.options.instances_dir),
            accelerator=self.accelerator, hypervisor_version=self._version[1],
            cpu_info=host.cpu_info(), uptime=await host.uptime_line())
