"""Which kernel modules the guest loads, and in which order.

The Debian cloud kernel builds the virtio drivers, the ACPI button, evdev and
isofs as modules. The guest has no kmod and no ``modules.dep`` (the kernel
package leaves ``depmod`` to its postinst), so busybox ``insmod`` loads plain
files in an order fixed here at build time: each module after everything its
``depends=`` (read from the ``.ko`` by ``elf.modinfo``) names.

``GUEST_MODULES`` names what the guest wants with the kernel config symbol that
builds it. ``plan_modules`` reads the kernel config: ``=y`` means built in
(nothing to load), ``=m`` means load the module and its dependencies, unset
means the feature is missing, which is an error for a required entry and a
note for an optional one. ``load_order`` is the pure ordering step the unit
tests cover. ``initramfs.py`` copies the files; ``init.sh`` insmods them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tinystack.image.guest import elf

__all__ = [
    "GUEST_MODULES", "KernelFeature", "ModuleError", "ModulePlan",
    "load_order", "module_name", "plan_modules", "read_kernel_config",
]


@dataclass(frozen=True)
class KernelFeature:
    symbol: str
    """Kernel config symbol, e.g. ``CONFIG_VIRTIO_NET``."""
    module: str
    """Module name (``_`` spelling) that provides it when the symbol is ``m``."""
    required: bool = True
    why: str = ""
    group: str = "boot"
    """``boot``: loaded before anything else; ``cdrom``: loaded in the background, waited
    for only when looking for a config drive (the IDE probe costs most of a second)."""


GUEST_MODULES: tuple[KernelFeature, ...] = (
    KernelFeature("CONFIG_BLK_DEV_INITRD", "", why="boot from an initramfs"),
    KernelFeature("CONFIG_DEVTMPFS", "", why="/dev without udev"),
    KernelFeature("CONFIG_EXT4_FS", "ext4", why="the root disk"),
    KernelFeature("CONFIG_VIRTIO_PCI", "virtio_pci", why="virtio devices on PCI"),
    KernelFeature("CONFIG_VIRTIO_NET", "virtio_net", why="the NIC"),
    KernelFeature("CONFIG_VIRTIO_BLK", "virtio_blk", why="root disk and volumes"),
    KernelFeature("CONFIG_VIRTIO_CONSOLE", "virtio_console", required=False),
    KernelFeature("CONFIG_HW_RANDOM_VIRTIO", "virtio_rng", required=False),
    KernelFeature("CONFIG_VIRTIO_BALLOON", "virtio_balloon", required=False),
    KernelFeature("CONFIG_ACPI_BUTTON", "button", why="ACPI power button"),
    KernelFeature("CONFIG_INPUT_EVDEV", "evdev", why="acpid reads the button from evdev"),
    KernelFeature("CONFIG_ISO9660_FS", "isofs", why="the config drive"),
    KernelFeature("CONFIG_ATA_PIIX", "ata_piix", required=False, why="config drive as IDE CD-ROM",
                  group="cdrom"),
    KernelFeature("CONFIG_BLK_DEV_SR", "sr_mod", required=False, why="config drive as IDE CD-ROM",
                  group="cdrom"),
)
"""What the guest needs from its kernel, in the order the guest loads it."""


class ModuleError(RuntimeError):
    """The kernel lacks a required feature, or a module or dependency is missing."""


@dataclass
class ModulePlan:
    """What ``plan_modules`` found: files to copy in load order, and what it skipped."""

    kernel_version: str
    groups: dict[str, list[Path]] = field(default_factory=dict)
    """{group: ``.ko`` files, dependencies first}; a group needs only earlier groups."""
    builtin: list[str] = field(default_factory=list)
    """Config symbols the kernel builds in (nothing to load)."""
    missing: list[str] = field(default_factory=list)
    """Optional config symbols the kernel does not have at all."""


def module_name(filename: str) -> str:
    """The kernel's name for a module file: ``virtio-rng.ko`` -> ``virtio_rng``."""
    return filename.removesuffix(".ko").replace("-", "_")


def read_kernel_config(path: Path) -> dict[str, str]:
    """A kernel ``config-*`` file as {symbol: value}; unset symbols are absent."""
    config = {}
    for line in Path(path).read_text().splitlines():
        symbol, sep, value = line.partition("=")
        if sep and symbol.startswith("CONFIG_"):
            config[symbol] = value.strip().strip('"')
    return config


def load_order(wanted: Iterable[str], depends: Mapping[str, Iterable[str]],
               builtin: Iterable[str] = ()) -> list[str]:
    """Modules to insmod, each after its dependencies, otherwise in ``wanted`` order.

    ``depends`` maps every available module to the names in its ``depends=``;
    names in ``builtin`` are in the kernel already and are left out. Raises
    ``ModuleError`` for a module that is neither available nor built in, and
    for a dependency cycle.
    """
    order: list[str] = []
    done = set(builtin)
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name):], name])
            raise ModuleError(f"module dependency cycle: {cycle}")
        if name not in depends:
            needed_by = f" (needed by {visiting[-1]})" if visiting else ""
            raise ModuleError(f"module {name}{needed_by} is neither built in nor shipped")
        visiting.append(name)
        for dependency in depends[name]:
            visit(dependency)
        visiting.pop()
        done.add(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def plan_modules(kernel_tree: Path, features: Iterable[KernelFeature] = GUEST_MODULES) -> ModulePlan:
    """Read the extracted kernel package at ``kernel_tree`` and decide what to load.

    ``kernel_tree`` holds ``boot/config-VERSION`` and ``lib/modules/VERSION/``.
    """
    configs = sorted((kernel_tree / "boot").glob("config-*"))
    if len(configs) != 1:
        raise ModuleError(f"expected one boot/config-* in {kernel_tree}, found {len(configs)}")
    version = configs[0].name.removeprefix("config-")
    config = read_kernel_config(configs[0])
    moddir = kernel_tree / "lib" / "modules" / version
    plan = ModulePlan(kernel_version=version)

    wanted: dict[str, list[str]] = {}
    for feature in features:
        value = config.get(feature.symbol)
        if value == "y":
            plan.builtin.append(feature.symbol)
        elif value == "m" and feature.module:
            wanted.setdefault(feature.group, []).append(feature.module)
        elif feature.required:
            raise ModuleError(
                f"kernel {version} has {feature.symbol}={value or 'unset'}; the guest needs it"
                + (f" for {feature.why}" if feature.why else "")
            )
        else:
            plan.missing.append(feature.symbol)

    files = {module_name(p.name): p for p in moddir.rglob("*.ko")}
    depends = {}
    for name in _closure([m for names in wanted.values() for m in names], files):
        deps = elf.modinfo(files[name]).get("depends", "")
        depends[name] = [d for d in deps.split(",") if d]
    loaded = _builtin_modules(moddir)
    for group, names in wanted.items():
        order = load_order(names, depends, loaded)
        plan.groups[group] = [files[name] for name in order]
        loaded |= set(order)
    return plan


def _closure(wanted: list[str], files: Mapping[str, Path]) -> list[str]:
    """``wanted`` and all it depends on that exists as a file (others are reported later)."""
    seen: list[str] = []
    stack = list(wanted)
    while stack:
        name = stack.pop()
        if name in seen or name not in files:
            continue
        seen.append(name)
        deps = elf.modinfo(files[name]).get("depends", "")
        stack.extend(d for d in deps.split(",") if d)
    return seen


def _builtin_modules(moddir: Path) -> set[str]:
    """Names in ``modules.builtin`` (``kernel/fs/ext4/ext4.ko`` -> ``ext4``)."""
    try:
        lines = (moddir / "modules.builtin").read_text().splitlines()
    except FileNotFoundError:
        return set()
    return {module_name(line.rsplit("/", 1)[-1]) for line in lines if line.strip()}
