"""Debian packages for the guest: pick versions, download, unpack into a cache.

The guest is made of Debian's own binaries and nothing else: the cloud kernel
(``linux-image-cloud-amd64`` names the versioned ``linux-image-*`` package),
``busybox-static``, and ``dropbear-bin`` with the library packages it depends
on. ``resolve_packages`` asks ``apt-cache`` for the candidate versions (the
build's cache key is made of them); ``fetch_packages`` runs one ``apt-get
download`` for all that are missing and ``dpkg-deb -x`` once per package
version, keeping both the ``.deb`` and the unpacked tree under the cache dir::

    CACHE/debs/NAME_VERSION.deb
    CACHE/pkgs/NAME_VERSION/...          (the unpacked package)

Every command is an argv list with a timeout. Nothing is installed on the
host. ``build.py`` drives this; ``initramfs.py`` picks files out of the trees.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUSYBOX", "KERNEL_META", "SSH_SERVER", "Package", "PackageError",
    "fetch_packages", "parse_control", "parse_depends", "prune_cache", "resolve_packages",
]

KERNEL_META = "linux-image-cloud-amd64"
"""Debian's metapackage for the current cloud kernel; it depends on the versioned one."""
BUSYBOX = "busybox-static"
SSH_SERVER = "dropbear-bin"
"""Resolved with its Depends closure: libc6, libcrypt1, zlib1g, libtomcrypt1, ..."""

APT_CACHE_TIMEOUT = 60
DOWNLOAD_TIMEOUT = 600
UNPACK_TIMEOUT = 300


class PackageError(RuntimeError):
    """apt or dpkg failed; the message says which command and what it printed."""


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str

    @property
    def key(self) -> str:
        """``NAME_VERSION`` with the epoch colon made file-name safe."""
        return f"{self.name}_{self.version.replace(':', '%3a')}"


def parse_control(text: str) -> dict[str, str]:
    """The first stanza of ``apt-cache show`` output as {field: value}."""
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" and last:
            fields[last] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            last = name.strip()
            fields[last] = value.strip()
    return fields


def parse_depends(value: str) -> list[list[str]]:
    """A Depends field as alternatives of package names, versions and arches dropped.

    ``"libc6 (>= 2.34), a | b:any"`` -> ``[["libc6"], ["a", "b"]]``.
    """
    groups = []
    for group in value.split(","):
        names = [re.split(r"[\s(:\[]", alt.strip(), maxsplit=1)[0] for alt in group.split("|")]
        names = [n for n in names if n]
        if names:
            groups.append(names)
    return groups


def _run(argv: list[str], timeout: float, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise PackageError(f"{argv[0]} not found: the guest builder needs Debian's apt and dpkg") \
            from None
    except subprocess.TimeoutExpired:
        raise PackageError(f"{' '.join(argv)} took longer than {timeout:.0f} s") from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise PackageError(f"{' '.join(argv)} exited {result.returncode}: {output}")
    return result.stdout


def _show(name: str) -> dict[str, str]:
    return _show_many([name])[name]


def _show_many(names: list[str]) -> dict[str, dict[str, str]]:
    """The candidate stanza of each package, from one ``apt-cache show`` call."""
    argv = ["apt-cache", "show", "--no-all-versions", *names]
    try:
        output = _run(argv, APT_CACHE_TIMEOUT)
    except PackageError as exc:
        raise PackageError(f"{exc}\n(is `apt-get update` done and are {', '.join(names)} "
                           "in the apt sources?)") from None
    found: dict[str, dict[str, str]] = {}
    for stanza in output.split("\n\n"):
        fields = parse_control(stanza)
        if "Package" in fields and "Version" in fields:
            found.setdefault(fields["Package"], fields)
    for name in names:
        if name not in found:
            raise PackageError(f"apt-cache knows no installable version of {name}; "
                               "run `apt-get update`")
    return found


def resolve_packages() -> list[Package]:
    """The candidate versions of everything the guest is made of, sorted by name."""
    meta = _show(KERNEL_META)
    kernels = [alt for group in parse_depends(meta.get("Depends", "")) for alt in group
               if alt.startswith("linux-image-")]
    if not kernels:
        raise PackageError(f"{KERNEL_META} depends on no linux-image-* package")
    kernel = _show(kernels[0])
    found = {
        kernels[0]: Package(kernels[0], kernel["Version"]),
        BUSYBOX: Package(BUSYBOX, _show(BUSYBOX)["Version"]),
    }
    found.update(_closure(SSH_SERVER))
    return sorted(found.values())


def _closure(root: str) -> dict[str, Package]:
    """``root`` and the packages its Depends and Pre-Depends pull in, recursively."""
    found: dict[str, Package] = {}
    level = [root]
    while level:
        shown = _show_many(level)
        following = []
        for name, fields in shown.items():
            found[name] = Package(name, fields["Version"])
        for fields in shown.values():
            for field in ("Pre-Depends", "Depends"):
                for group in parse_depends(fields.get(field, "")):
                    if not any(alt in found or alt in following for alt in group):
                        following.append(group[0])
        level = following
    return found


def fetch_packages(wanted: Iterable[Package], cache_dir: Path) -> dict[str, Path]:
    """{name: unpacked tree} for every package, downloading (in one apt-get) what is missing."""
    wanted = list(wanted)
    debs = cache_dir / "debs"
    missing = [p for p in wanted
               if not (cache_dir / "pkgs" / p.key).is_dir() and not (debs / f"{p.key}.deb").is_file()]
    if missing:
        _download(missing, debs)
    return {p.name: _unpack(p, cache_dir) for p in wanted}


def _unpack(package: Package, cache_dir: Path) -> Path:
    tree = cache_dir / "pkgs" / package.key
    if tree.is_dir():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{package.key}."))
    try:
        deb = cache_dir / "debs" / f"{package.key}.deb"
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], UNPACK_TIMEOUT)
        tmp.chmod(0o755)
        tmp.rename(tree)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return tree


def _download(wanted: list[Package], debs: Path) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=debs, prefix=".download."))
    try:
        tmp.chmod(0o755)
        _run(["apt-get", "download", "-q", *(f"{p.name}={p.version}" for p in wanted)],
             DOWNLOAD_TIMEOUT, cwd=tmp)
        for package in wanted:
            found = list(tmp.glob(f"{package.key}_*.deb"))
            if len(found) != 1:
                raise PackageError(f"apt-get download left no single .deb for {package.name} "
                                   f"{package.version} (found {[f.name for f in found]})")
            found[0].rename(debs / f"{package.key}.deb")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prune_cache(cache_dir: Path, keep: Iterable[Package]) -> None:
    """Remove downloaded and unpacked packages that are not in ``keep``."""
    keys = {p.key for p in keep}
    for path in [*(cache_dir / "debs").glob("*.deb"), *(cache_dir / "pkgs").glob("*")]:
        key = path.name.removesuffix(".deb")
        if key not in keys:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
