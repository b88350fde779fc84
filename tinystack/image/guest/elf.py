"""Reads the two things the guest builder needs from ELF files, without binutils.

- ``modinfo(path)``: the ``key=value`` strings of a kernel module's ``.modinfo``
  section (``name``, ``depends``, ``vermagic``...), as ``modinfo`` prints them.
- ``needed_libraries(path)``: the ``DT_NEEDED`` sonames of a dynamically linked
  program or library, and ``interpreter(path)`` its ``PT_INTERP`` loader path.

Only 64-bit little-endian ELF (x86_64) is read; anything else raises
``ElfError``. ``modules.py`` orders modules with ``modinfo``; ``initramfs.py``
copies a program's library closure with ``needed_libraries``.
"""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["ElfError", "interpreter", "modinfo", "needed_libraries", "sections"]

_DT_NEEDED = 1
_PT_INTERP = 3


class ElfError(ValueError):
    """The file is not a 64-bit little-endian ELF file, or is cut short."""


def _header(data: bytes, path: Path) -> tuple[int, int, int, int, int, int, int]:
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ElfError(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError(f"{path}: not a 64-bit little-endian ELF file")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    return phoff, phentsize, phnum, shoff, shentsize, shnum, shstrndx


def _section_table(data: bytes, path: Path) -> list[tuple[int, int, int, int]]:
    """Each section header as (name offset, file offset, size, link)."""
    _, _, _, shoff, shentsize, shnum, _ = _header(data, path)
    if shoff + shnum * shentsize > len(data):
        raise ElfError(f"{path}: section headers past the end of the file")
    table = []
    for index in range(shnum):
        base = shoff + index * shentsize
        name, _type, _flags, _addr, offset, size, link = struct.unpack_from("<IIQQQQI", data, base)
        table.append((name, offset, size, link))
    return table


def sections(path: Path) -> dict[str, bytes]:
    """Every named section of the ELF file at ``path``: {name: contents}."""
    data = Path(path).read_bytes()
    table = _section_table(data, path)
    shstrndx = _header(data, path)[6]
    if not table or shstrndx >= len(table):
        return {}
    names_offset = table[shstrndx][1]
    found = {}
    for name, offset, size, _ in table:
        start = names_offset + name
        label = data[start:data.index(b"\0", start)].decode("ascii", "replace")
        if label:
            found[label] = data[offset:offset + size]
    return found


def modinfo(path: Path) -> dict[str, str]:
    """The ``.modinfo`` strings of a ``.ko``: {key: value}; repeated keys joined by ','."""
    raw = sections(path).get(".modinfo")
    if raw is None:
        raise ElfError(f"{path}: no .modinfo section (not a kernel module)")
    info: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if not sep:
            continue
        info[key] = f"{info[key]},{value}" if key in info and value else value
    return info


def needed_libraries(path: Path) -> list[str]:
    """The sonames a program or library asks the loader for, in ``DT_NEEDED`` order."""
    data = Path(path).read_bytes()
    table = _section_table(data, path)
    shstrndx = _header(data, path)[6]
    names_offset = table[shstrndx][1] if shstrndx < len(table) else 0
    for name, offset, size, link in table:
        start = names_offset + name
        if data[start:data.index(b"\0", start)] != b".dynamic":
            continue
        strtab = table[link][1]
        needed = []
        for entry in range(offset, offset + size - 15, 16):
            tag, value = struct.unpack_from("<qQ", data, entry)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                start = strtab + value
                needed.append(data[start:data.index(b"\0", start)].decode())
        return needed
    return []  # static


def interpreter(path: Path) -> str | None:
    """The program's loader (``PT_INTERP``), e.g. /lib64/ld-linux-x86-64.so.2; None if static."""
    data = Path(path).read_bytes()
    phoff, phentsize, phnum = _header(data, path)[:3]
    for index in range(phnum):
        base = phoff + index * phentsize
        ptype, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", data, base)
        if ptype == _PT_INTERP:
            return data[offset:offset + filesz].rstrip(b"\0").decode()
    return None
