"""The default guest image, built for real and booted in QEMU (TCG) without tinystack.

The image is built once per session into a cache that survives between runs:
``TINYSTACK_TEST_GUEST_CACHE``, else the cache ``tinystack up`` uses by default
(``$XDG_CACHE_HOME/tinystack/guest``), so one build serves both. The first
build downloads about 30 MB of Debian packages and takes about a minute.
Every guest gets a console reader that keeps draining its serial port, and
every QEMU started here is killed at the end of its test, pass or fail.

Networks: ``-nic none``, or QEMU user networking with ``restrict=on`` (the
guest reaches nothing outside; only the forwards set here exist) whose
``guestfwd`` puts a tiny metadata service at 169.254.169.254.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinystack.image.guest import READY_RE, GuestImage, build_guest_image

BOOT_TIMEOUT = 90.0
"""Seconds from starting QEMU to the ready line: about 5 on a quiet machine, 30 on a
busy one; the bound only stops a hung guest from hanging the run."""
QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    if QEMU is None:
        pytest.fail("qemu-system-x86_64 is missing: ./install.sh installs qemu-system-x86",
                    pytrace=False)
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    cache = os.environ.get("TINYSTACK_TEST_GUEST_CACHE") or Path(cache_home) / "tinystack" / "guest"
    return build_guest_image(Path(cache), progress=False)


class Guest:
    """One QEMU process and its serial console, read line by line in a thread."""

    def __init__(self, argv: list[str], qmp_path: Path):
        self.argv = argv
        self.qmp_path = qmp_path
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        for raw in self.process.stdout:
            with self.changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    @property
    def console(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for(self, predicate, timeout: float, what: str, start: int = 0):
        """The first console line from index ``start`` on that ``predicate`` accepts (a match)."""
        deadline = time.monotonic() + timeout
        seen = start
        with self.changed:
            while True:
                for index in range(seen, len(self.lines)):
                    found = predicate(self.lines[index])
                    if found:
                        return found
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError(f"no {what} within {timeout:.0f} s; console:\n"
                                         + "\n".join(self.lines[-80:]))
                self.changed.wait(min(remaining, 0.5))

    def wait_until_ready(self, timeout: float = BOOT_TIMEOUT):
        """The ready line's match; records the seconds it took in ``ready_after``."""
        match = self.wait_for(READY_RE.search, timeout, "ready line")
        self.ready_after = time.monotonic() - self.started
        print(f"guest ready after {self.ready_after:.1f} s (guest uptime {match['uptime']} s)")
        return match

    def run(self, command: str, timeout: float = 20.0) -> str:
        """Type ``command`` into the console shell; its output up to an end mark."""
        mark = f"done-{time.monotonic_ns()}"
        start = len(self.lines)
        self.process.stdin.write(f"{command}; echo {mark[:5]}\"{mark[5:]}\"\n".encode())
        self.process.stdin.flush()
        self.wait_for(lambda line: line.strip() == mark, timeout, f"end of `{command}`", start)
        with self.changed:
            output = self.lines[start:]
        end = next(i for i, line in enumerate(output) if line.strip() == mark)
        return "\n".join(output[:end])

    def qmp(self, command: str, timeout: float = 10.0) -> dict:
        """Run one QMP command on a fresh connection; its reply."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.qmp_path))
            stream = sock.makefile("rwb")
            json.loads(stream.readline())  # greeting
            for message in ({"execute": "qmp_capabilities"}, {"execute": command}):
                stream.write(json.dumps(message).encode() + b"\n")
                stream.flush()
                while True:
                    reply = json.loads(stream.readline())
                    if "event" not in reply:
                        break
            return reply

    def wait_for_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"QEMU still runs {timeout:.0f} s later; console:\n"
                                 + "\n".join(self.lines[-40:])) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.reader.join(5)


@pytest.fixture
def boot(guest_image: GuestImage, tmp_path: Path) -> Iterator:
    """``boot(*qemu_args, cmdline=..., initrd=True)`` starts a guest; all are killed after the test."""
    guests: list[Guest] = []

    def start(*extra: str, cmdline: str = "console=ttyS0") -> Guest:
        qmp = tmp_path / f"qmp{len(guests)}.sock"
        argv = [
            QEMU, "-accel", "tcg", "-machine", "pc", "-m", "192", "-smp", "1",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-qmp", f"unix:{qmp},server=on,wait=off",
            "-device", "virtio-rng-pci",
            "-kernel", str(guest_image.kernel), "-initrd", str(guest_image.ramdisk),
            "-append", cmdline, *extra,
        ]
        guest = Guest(argv, qmp)
        guests.append(guest)
        return guest

    yield start
    for guest in guests:
        guest.kill()


def make_config_drive(tmp_path: Path, meta: dict, user_data: str | None) -> Path:
    """An ISO 9660 config drive (label config-2) as Nova writes it."""
    root = tmp_path / "config-drive"
    latest = root / "openstack" / "latest"
    latest.mkdir(parents=True)
    (latest / "meta_data.json").write_text(json.dumps(meta))
    if user_data is not None:
        (latest / "user_data").write_text(user_data)
    iso = tmp_path / "config.iso"
    tool = shutil.which("genisoimage") or shutil.which("xorrisofs")
    if tool is None:
        pytest.fail("genisoimage (or xorriso) is missing: ./install.sh installs it", pytrace=False)
    subprocess.run([tool, "-quiet", "-o", str(iso), "-V", "config-2", "-J", "-r", str(root)],
                   check=True, timeout=60, capture_output=True)
    return iso


def ssh_key(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@tinystack",
                    "-f", str(key)], check=True, timeout=30)
    return key, (tmp_path / "id_ed25519.pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- booting ------------------------------------------------------------------------


def test_boots_to_ready_without_network_or_instance_data(boot):
    guest = boot("-nic", "none")
    ready = guest.wait_until_ready()
    assert ready["hostname"] == "tiny"
    assert ready["addresses"] == "none"
    assert "no instance data" in guest.console
    assert "ssh-host-key: ssh-ed25519 " in guest.console
    # The console is a root shell.
    assert guest.run("id -u; echo $((6 * 7))").splitlines()[-2:] == ["0", "42"]


@pytest.mark.parametrize("attach", ["virtio", "ide-cdrom"])
def test_config_drive_sets_hostname_keys_and_runs_user_data(boot, tmp_path, attach):
    _, public_key = ssh_key(tmp_path)
    meta = {"uuid": "0b7a5f4e-1d1c-4c69-9c35-4f8e5b0f7a11", "name": "cfgdrive-test",
            "hostname": "cfgdrive-test", "public_keys": {"mykey": public_key + "\n"}}
    iso = make_config_drive(tmp_path, meta, "#!/bin/sh\necho user-data-marker-$((40 + 2))\n")
    drive = "if=virtio" if attach == "virtio" else "if=ide,media=cdrom"
    guest = boot("-nic", "none", "-drive", f"file={iso},format=raw,readonly=on,{drive}")
    ready = guest.wait_until_ready()
    assert ready["hostname"] == "cfgdrive-test"
    assert "instance data from config drive" in guest.console
    guest.wait_for(lambda line: line.endswith("user-data-marker-42"), 30, "user-data output")
    # The shell is free once init has said how user-data ended: before that, its words
    # can land in the middle of a command's output.
    guest.wait_for(lambda line: line.endswith("user-data exited 0"), 30, "user-data's end")
    assert guest.run("cat /root/.ssh/authorized_keys").splitlines()[-1] == public_key
    assert guest.run("hostname").splitlines()[-1] == "cfgdrive-test"


METADATA_SERVER = textwrap.dedent('''
    """Answers one HTTP request on stdin/stdout from a {path: body} JSON file (QEMU guestfwd)."""
    import json, sys
    routes = json.load(open(sys.argv[1]))
    request = sys.stdin.buffer.readline().decode()
    while sys.stdin.buffer.readline() not in (b"\\r\\n", b"\\n", b""):
        pass
    path = request.split()[1].lstrip("/") if len(request.split()) > 1 else ""
    body = routes.get(path)
    status = "200 OK" if body is not None else "404 Not Found"
    body = (body if body is not None else "not found").encode()
    sys.stdout.buffer.write(b"HTTP/1.0 " + status.encode() + b"\\r\\nContent-Length: "
                            + str(len(body)).encode() + b"\\r\\nConnection: close\\r\\n\\r\\n" + body)
    sys.stdout.buffer.flush()
''')


@pytest.mark.parametrize("flavor", ["openstack", "ec2"])
def test_metadata_service_gives_hostname_key_user_data_and_ssh_works(boot, tmp_path, flavor):
    key, public_key = ssh_key(tmp_path)
    user_data = "#!/bin/sh\necho metadata-marker-$((40 + 2)) > /root/marker\ncat /root/marker\n"
    if flavor == "openstack":
        routes = {
            "openstack/latest/meta_data.json": json.dumps({
                "uuid": "5d3c0b6e-8a53-4bd4-9c5e-2f2f4c1d3e9a", "hostname": "mdservice-test.novalocal",
                "name": "mdservice-test", "public_keys": {"k": public_key + "\n"},
            }),
            "openstack/latest/user_data": user_data,
        }
    else:
        routes = {
            "latest/meta-data/hostname": "mdservice-test.ec2.internal",
            "latest/meta-data/instance-id": "i-0000002a",
            "latest/meta-data/public-keys/": "0=k",
            "latest/meta-data/public-keys/0/openssh-key": public_key + "\n",
            "latest/user-data": user_data,
        }
    (tmp_path / "routes.json").write_text(json.dumps(routes))
    (tmp_path / "metadata.py").write_text(METADATA_SERVER)
    port = free_port()
    nic = ("user,model=virtio-net-pci,restrict=on,net=169.254.0.0/16,"
           f"hostfwd=tcp:127.0.0.1:{port}-:22,"
           f"guestfwd=tcp:169.254.169.254:80-cmd:{sys.executable} {tmp_path / 'metadata.py'} "
           f"{tmp_path / 'routes.json'}")
    guest = boot("-nic", nic)
    ready = guest.wait_until_ready()
    assert ready["hostname"] == "mdservice-test"
    assert ready["addresses"].startswith("169.254.")
    source = "OpenStack" if flavor == "openstack" else "EC2"
    assert f"instance data from http://169.254.169.254 ({source})" in guest.console
    guest.wait_for(lambda line: line.endswith("metadata-marker-42"), 30, "user-data output")

    host_key = guest.wait_for(lambda line: line.partition("ssh-host-key: ")[2], 1, "host key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    result = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "ConnectTimeout=20", "root@127.0.0.1", "hostname; cat /root/marker"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mdservice-test", "metadata-marker-42"]


def test_root_disk_persists_and_power_button_shuts_down(boot, guest_image, tmp_path):
    overlay = tmp_path / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(guest_image.disk), str(overlay)], check=True, timeout=30)
    meta = {"uuid": "9e1f4a52-6a43-4c0e-a1f0-3f5a1b2c3d4e", "hostname": "persistent"}
    iso = make_config_drive(tmp_path, meta, "#!/bin/sh\necho once-per-instance-$((40 + 2))\n")
    args = ("-nic", "none", "-drive", f"file={overlay},format=qcow2,if=virtio",
            "-drive", f"file={iso},format=raw,if=virtio,readonly=on")

    first = boot(*args, cmdline=guest_image.kernel_cmdline)
    assert first.wait_until_ready()["hostname"] == "persistent"
    assert "root disk /dev/vda" in first.console
    first.wait_for(lambda line: line.endswith("once-per-instance-42"), 30, "user-data output")
    first.run("echo kept-across-boots > /root/note")
    host_key = first.wait_for(lambda line: line.partition("ssh-host-key: ")[2], 1, "host key")
    assert first.qmp("system_powerdown") == {"return": {}}
    assert first.wait_for_exit(30) == 0
    assert "shutting down" in first.console

    second = boot(*args, cmdline=guest_image.kernel_cmdline)
    second.wait_until_ready()
    assert second.run("cat /root/note").splitlines()[-1] == "kept-across-boots"
    assert "user-data already ran" in second.console
    assert f"ssh-host-key: {host_key}" in second.console
