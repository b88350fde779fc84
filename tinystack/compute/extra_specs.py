"""Flavor extra spec validation (microversion 2.86): known namespaces must hold known keys.

Nova checks keys in the namespaces it knows (``hw``, ``hw_rng``, ``hw_video``,
``os``, ``quota``, ``resources``, ``trait``, ``accel``...) and leaves every
other key alone. This table covers the keys of those namespaces that a
libvirt/QEMU cloud uses; a key of a known namespace that is not in it, or a
value of the wrong kind, is a 400. Namespaces free by nature
(``aggregate_instance_extra_specs``, ``capabilities``, ``vmware``,
``powervm``) take anything.
"""

from __future__ import annotations

import re

from tinystack.common.errors import BadRequest

__all__ = ["validate", "KEY_PATTERN"]

KEY_PATTERN = re.compile(r"^[\w.:\- ]{1,255}$")

_BOOL = ("true", "false", "yes", "no", "1", "0", "on", "off", "y", "n", "t", "f")
_INT = "int"
_ANY = "any"

_KNOWN: dict[str, object] = {
    "hw:cpu_policy": ("dedicated", "shared", "mixed"),
    "hw:cpu_thread_policy": ("prefer", "isolate", "require"),
    "hw:emulator_threads_policy": ("share", "isolate"),
    "hw:cpu_sockets": _INT, "hw:cpu_cores": _INT, "hw:cpu_threads": _INT,
    "hw:cpu_max_sockets": _INT, "hw:cpu_max_cores": _INT, "hw:cpu_max_threads": _INT,
    "hw:cpu_realtime": _BOOL, "hw:cpu_realtime_mask": _ANY, "hw:cpu_dedicated_mask": _ANY,
    "hw:numa_nodes": _INT, "hw:mem_page_size": _ANY, "hw:boot_menu": _BOOL,
    "hw:watchdog_action": ("none", "pause", "poweroff", "reset", "disabled"),
    "hw:mem_encryption": _BOOL, "hw:pmu": _BOOL, "hw:serial_port_count": _INT,
    "hw:tpm_version": ("1.2", "2.0"), "hw:tpm_model": ("tpm-tis", "tpm-crb"),
    "hw:vif_multiqueue_enabled": _BOOL, "hw:hide_hypervisor_id": _BOOL,
    "hw:machine_type": _ANY, "hw:locked_memory": _BOOL, "hw:virtio_packed_ring": _BOOL,
    "hw:rescue_bus": _ANY, "hw:rescue_device": _ANY, "hw:ephemeral_encryption": _BOOL,
    "hw:ephemeral_encryption_format": ("luks",), "hw:maxphysaddr_mode": _ANY,
    "hw:maxphysaddr_bits": _INT, "hw:viommu_model": _ANY, "hw:cpu_model": _ANY,
    "hw_rng:allowed": _BOOL, "hw_rng:rate_bytes": _INT, "hw_rng:rate_period": _INT,
    "hw_video:ram_max_mb": _INT,
    "os:secure_boot": ("required", "disabled", "optional"),
    "os:monitors": _INT,
    "accel:device_profile": _ANY,
    "pci_passthrough:alias": _ANY,
}
_PATTERNS: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^hw:numa_(cpus|mem)\.\d+$"), _ANY),
    (re.compile(r"^hw:cache_(l3|l3_code|l3_data)\.\d+$"), _ANY),
    (re.compile(r"^quota:[a-z_]+$"), _INT),
    (re.compile(r"^resources\d*:[A-Z0-9_]+$"), _INT),
    (re.compile(r"^trait\d*:[A-Z0-9_]+$"), ("required", "forbidden")),
    (re.compile(r"^group_policy$"), ("none", "isolate")),
]
_CHECKED = ("hw", "hw_rng", "hw_video", "os", "quota", "resources", "trait", "accel",
            "pci_passthrough")


def _rule(key: str) -> object | None:
    if key in _KNOWN:
        return _KNOWN[key]
    for pattern, rule in _PATTERNS:
        if pattern.match(key):
            return rule
    return None


def _namespace(key: str) -> str:
    head = key.split(":", 1)[0]
    return re.sub(r"\d+$", "", head)


def validate(key: str, value: str) -> None:
    """Raise BadRequest, as Nova does from 2.86 on, for a bad key or value."""
    if _namespace(key) not in _CHECKED or ":" not in key:
        return
    rule = _rule(key)
    if rule is None:
        raise BadRequest(f"Validation failed; extra spec '{key}' does not appear to be a "
                         "valid extra spec.")
    if rule == _INT:
        if not re.fullmatch(r"-?\d+", value.strip()):
            raise BadRequest(f"Validation failed; '{value}' is not a valid value for '{key}'; "
                             "must be an integer.")
    elif isinstance(rule, tuple) and value.strip().lower() not in rule:
        raise BadRequest(f"Validation failed; '{value}' is not a valid value for '{key}'; "
                         f"must be one of: {', '.join(rule)}.")
