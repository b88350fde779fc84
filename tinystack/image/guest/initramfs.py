"""The guest's file tree, and the initramfs (a gzipped newc cpio) made from it.

``assemble_tree`` lays out the userland from unpacked Debian packages:

    /init                       init.sh (PID 1; also the udhcpc script and the
                                power-button action, by symlink)
    /bin/busybox + applet links every busybox applet (``busybox --list-full``)
    /usr/sbin/dropbear, /usr/bin/dropbearkey
    /lib/x86_64-linux-gnu/*     the libraries those two need (DT_NEEDED closure)
    /lib64/ld-linux-x86-64.so.2 the loader
    /etc/...                    passwd, group, shadow, shells, profile, release

``write_initramfs`` packs that tree plus the kernel modules
(``/lib/modules/VERSION/*.ko`` and the ``load-order*`` lists init.sh reads) and a
``/dev/console`` node into a cpio archive, written here in Python so that no
root, no cpio binary and no shell are needed; every entry is owned by root and
dated ``MTIME`` so the same inputs give the same bytes. The root disk
(``rootdisk.py``) is made from the same tree, without the modules: the
initramfs always loads them, so the disk never holds modules of another kernel.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from tinystack.image.guest import elf

__all__ = [
    "MTIME", "CpioWriter", "TreeError", "assemble_tree", "find_in_trees", "write_initramfs",
]

MTIME = 1_700_000_000
"""The date on every initramfs entry (reproducible output)."""
LIBDIR = "lib/x86_64-linux-gnu"
LIB_SEARCH = (LIBDIR, "usr/lib/x86_64-linux-gnu", "lib", "usr/lib", "lib64")
PROGRAMS = ("usr/sbin/dropbear", "usr/bin/dropbearkey")
"""Dynamically linked programs copied from the SSH server package, with their libraries."""
BUSYBOX_TIMEOUT = 30

ETC_FILES: dict[str, tuple[int, str]] = {
    "etc/passwd": (0o644, "root:x:0:0:root:/root:/bin/sh\n"),
    "etc/group": (0o644, "root:x:0:\ntty:x:5:\n"),
    # '*' (not '!'): no password will ever match, and dropbear still allows keys.
    "etc/shadow": (0o600, "root:*:19700:0:99999:7:::\n"),
    "etc/shells": (0o644, "/bin/sh\n/bin/ash\n"),
    "etc/nsswitch.conf": (0o644, "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
    "etc/hostname": (0o644, "tiny\n"),
    "etc/profile": (0o644, (
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
        "[ \"$(id -u)\" = 0 ] && export HOME=/root\n"
        "export PS1='\\u@\\h:\\w\\$ '\n"
        "cd \"$HOME\" 2>/dev/null\n"
    )),
}
SYMLINKS = {
    "usr/share/udhcpc/default.script": "/init",
    "etc/acpi/PWRF/00000080": "/init",
    "var/run": "/run",
}
DIRS = {
    "dev": 0o755, "proc": 0o555, "sys": 0o555, "run": 0o755, "tmp": 0o1777, "root": 0o700,
    "mnt": 0o755, "newroot": 0o755, "home": 0o755, "var/lib": 0o755, "var/log": 0o755,
    "etc/dropbear": 0o700,
}


class TreeError(RuntimeError):
    """A file the guest needs is not in the unpacked packages."""


def find_in_trees(trees: Sequence[Path], path: str) -> Path | None:
    """The real file behind ``path`` in the first package tree that has it.

    Symlinks are followed inside the tree: an absolute target such as
    ``/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`` means that path in the same
    tree, never the host's file.
    """
    for tree in trees:
        current = PurePosixPath(path.lstrip("/"))
        for _ in range(40):
            candidate = tree / current
            if candidate.is_symlink():
                target = PurePosixPath(os.readlink(candidate))
                joined = target if target.is_absolute() else current.parent / target
                current = PurePosixPath(os.path.normpath("/" / joined)).relative_to("/")
                continue
            if candidate.is_file():
                return candidate
            break
    return None


def _library_closure(programs: Iterable[Path], trees: Sequence[Path]) -> dict[str, Path]:
    """{soname: file} for every library the programs load, directly or not."""
    found: dict[str, Path] = {}
    pending = [lib for program in programs for lib in elf.needed_libraries(program)]
    while pending:
        soname = pending.pop()
        if soname in found:
            continue
        path = next((p for d in LIB_SEARCH if (p := find_in_trees(trees, f"{d}/{soname}"))), None)
        if path is None:
            raise TreeError(f"library {soname} is in none of the unpacked packages")
        found[soname] = path
        pending.extend(elf.needed_libraries(path))
    return found


def _copy(source: Path, dest: Path, mode: int = 0o755) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    dest.chmod(mode)


def _busybox_applets(busybox: Path) -> list[str]:
    """Applet paths relative to / (``bin/ls``, ``usr/bin/wget``...), asked of the binary."""
    result = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                            timeout=BUSYBOX_TIMEOUT, stdin=subprocess.DEVNULL, check=True)
    return [line.strip().lstrip("/") for line in result.stdout.splitlines()
            if line.strip() and line.strip() != "linuxrc"]


def assemble_tree(dest: Path, *, init_script: bytes, busybox_tree: Path,
                  ssh_trees: Sequence[Path], release: str) -> None:
    """Lay out the guest userland in the empty directory ``dest`` (see the module doc)."""
    (dest / "init").write_bytes(init_script)
    (dest / "init").chmod(0o755)

    busybox = find_in_trees([busybox_tree], "bin/busybox")
    if busybox is None:
        raise TreeError(f"no bin/busybox in {busybox_tree}")
    _copy(busybox, dest / "bin" / "busybox")
    for applet in _busybox_applets(dest / "bin" / "busybox"):
        link = dest / applet
        if applet != "bin/busybox" and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")

    programs = []
    for program in PROGRAMS:
        source = find_in_trees(ssh_trees, program)
        if source is None:
            raise TreeError(f"no {program} in the SSH server packages")
        _copy(source, dest / program)
        programs.append(source)
    for soname, source in _library_closure(programs, ssh_trees).items():
        _copy(source, dest / LIBDIR / soname)
    loaders = {elf.interpreter(p) for p in programs} - {None}
    for loader in loaders:
        link = dest / loader.lstrip("/")
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f"/{LIBDIR}/{PurePosixPath(loader).name}")

    for name, (mode, text) in ETC_FILES.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(text)
        (dest / name).chmod(mode)
    (dest / "etc" / "tinystack-guest-release").write_text(release)
    for name, mode in DIRS.items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        (dest / name).chmod(mode)
    for name, target in SYMLINKS.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).symlink_to(target)


class CpioWriter:
    """Writes a newc ("070701") cpio archive, the format the kernel unpacks.

    Entries are added parents first; every entry is owned by root and dated
    ``mtime``. ``close()`` writes the trailer.
    """

    def __init__(self, out, mtime: int = MTIME):
        self.out = out
        self.mtime = mtime
        self.inode = 0
        self.written: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        self.inode += 1
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, nlink, self.mtime, len(data), 0, 0,
                  rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        self.out.write(data + b"\0" * (-len(data) % 4))
        self.written.add(name)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        if name not in self.written:
            self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_parents(self, name: str) -> None:
        for parent in reversed(PurePosixPath(name).parents[:-1]):
            self.add_dir(str(parent))

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.add_parents(name)
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self.add_parents(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self.add_parents(name)
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def add_tree(self, root: Path) -> None:
        """Everything under ``root``, in sorted order, as files, dirs and symlinks."""
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            rel = base.relative_to(root)
            if str(rel) != ".":
                self.add_dir(rel.as_posix(), stat.S_IMODE(base.lstat().st_mode))
            for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
                path = base / name
                info = path.lstat()
                member = (rel / name).as_posix()
                if stat.S_ISLNK(info.st_mode):
                    self.add_symlink(member, os.readlink(path))
                elif stat.S_ISREG(info.st_mode):
                    self.add_file(member, path.read_bytes(), stat.S_IMODE(info.st_mode))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, nlink=1)


def write_initramfs(tree: Path, out: Path, *, kernel_version: str,
                    modules: Mapping[str, Sequence[Path]]) -> None:
    """Pack ``tree``, the modules and /dev/console into ``out`` (cpio.gz).

    ``modules`` maps a group to its files in load order; init.sh reads the
    order from ``load-order`` (the ``boot`` group) and ``load-order.GROUP``.
    """
    moddir = f"lib/modules/{kernel_version}"
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        cpio = CpioWriter(gz)
        cpio.add_tree(tree)
        cpio.add_char_device("dev/console", 5, 1)
        for group, files in modules.items():
            for module in files:
                cpio.add_file(f"{moddir}/{module.name}", module.read_bytes())
            listing = "load-order" if group == "boot" else f"load-order.{group}"
            cpio.add_file(f"{moddir}/{listing}", "".join(f"{m.name}\n" for m in files).encode())
        cpio.close()
    tmp.rename(out)
