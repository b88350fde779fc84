"""What the compute service and the compute agents say to each other on the bus.

The controller side (``service.py``, the scheduler, the conductor) owns the
database; an agent (``agent.py``, one per compute node) owns the machine.
They meet only here:

- controller -> ``compute.<host>``: ``cast("sync_server", spec=ServerSpec)``
  hands the desired state of one server (a higher ``revision`` wins; a spec
  with ``want="deleted"`` is a tombstone the agent applies and reports);
  ``call("console_output", server_id, length)``;
  ``call("snapshot_server", server_id, ...)``; ``call("serial_console", server_id)``;
  ``call("server_statistics", server_id)`` (disk and memory figures, {} when off).
  Replies: ``console_output`` returns the log's text (its last ``length`` lines
  when given); ``serial_console`` returns ``SerialConsole`` (a TCP endpoint the
  controller's websocket proxy connects to, one client at a time);
  ``snapshot_server(server_id, image_id, upload_url, token, disk_format)``
  writes the server's disk as one image file and uploads it with
  ``PUT upload_url`` (``X-Auth-Token: token``, Glance's image data call),
  then returns ``SnapshotResult``; it raises if the snapshot cannot be made.
- agent -> ``compute-conductor``: ``cast("report_server", report=ServerReport)``
  after every change it makes or sees, and ``cast("report_node",
  report=NodeReport)`` as a heartbeat with the node's resources.

Messages change additively: new fields get defaults, and receivers ignore
fields they do not know (pydantic ``extra="ignore"``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AGENT_TARGET",
    "CONDUCTOR_TARGET",
    "ImageRef",
    "PortBinding",
    "ServerSpec",
    "ServerReport",
    "NodeReport",
    "PowerState",
    "SerialConsole",
    "SnapshotResult",
]

CONDUCTOR_TARGET = "compute-conductor"


def AGENT_TARGET(host: str) -> str:  # noqa: N802 - reads as a constant
    return f"compute.{host}"


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


PowerState = Literal["running", "paused", "suspended", "shutdown", "crashed", "nostate"]


class ImageRef(_Message):
    """The image a server boots from; the agent fetches it into its base cache."""

    id: str
    disk_format: str = "qcow2"
    container_format: str = "bare"
    checksum: str | None = None
    size: int | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    kernel_cmdline: str | None = None
    """``os_command_line`` image property: the whole kernel command line, used instead of
    the agent's default ``root=/dev/vda console=ttyS0`` (as Nova does)."""
    download_url: str = ""
    """``GET`` this (with ``X-Auth-Token: token``) to read the image data."""
    properties: dict = Field(default_factory=dict)
    kernel: ImageRef | None = None
    """Where to fetch ``kernel_id`` (its own ``download_url`` and ``checksum``). When
    None, the agent reads it from ``download_url`` with ``id`` replaced by ``kernel_id``."""
    ramdisk: ImageRef | None = None
    """Where to fetch ``ramdisk_id``; as ``kernel``."""


class PortBinding(_Message):
    """One NIC: the network service's port as bound to this host."""

    port_id: str
    mac: str
    device: str = ""
    """Tap device name; empty means the agent derives it from the port id."""
    bridge: str = ""
    """Bridge to plug the tap into; empty means leave it unplugged."""
    mtu: int = 1500
    fixed_ips: list[dict] = Field(default_factory=list)


class ServerSpec(_Message):
    """The desired state of one server on one node."""

    id: str
    name: str
    revision: int
    want: Literal["active", "stopped", "paused", "suspended", "deleted"] = "active"
    reboot: Literal["", "soft", "hard"] = ""
    """A reboot to perform once; the agent reports ``reboot_done`` with the revision."""
    rebuild: bool = False
    """Recreate the root disk from ``image`` once, at this revision (Nova's rebuild, also
    when the image is the same one); the guest then boots as ``want`` says."""
    vcpus: int = 1
    memory_mb: int = 128
    root_gb: int = 1
    ephemeral_gb: int = 0
    image: ImageRef | None = None
    ports: list[PortBinding] = Field(default_factory=list)
    config_drive: bool = False
    metadata_files: dict[str, str] = Field(default_factory=dict)
    """Config drive contents, path -> text: ``openstack/latest/meta_data.json``,
    ``openstack/latest/user_data``, ``openstack/latest/network_data.json``..."""
    token: str = ""
    """A service token the agent may use to read images and write snapshots."""


class ServerReport(_Message):
    """What an agent found or did; the conductor writes it to the database."""

    server_id: str
    host: str
    revision: int
    power_state: PowerState = "nostate"
    state: Literal["active", "stopped", "paused", "suspended", "deleted", "error",
                   "building"] = "building"
    fault: str | None = None
    """Set with ``state="error"``: what went wrong, in words a user can act on."""
    launched_at: str | None = None
    console_log: str = ""
    """Path of the serial console log on the node (for operators, not the API)."""
    reboot_done: bool = False
    """True in the report that follows the reboot ``ServerSpec.reboot`` asked for at
    ``revision``."""


class NodeReport(_Message):
    """A compute node's heartbeat: what it has and what its guests use."""

    host: str
    hypervisor_type: str = "QEMU"
    accelerator: Literal["kvm", "tcg"] = "tcg"
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int = 0
    memory_mb_used: int = 0
    local_gb_used: int = 0
    running_vms: int = 0
    host_ip: str = "127.0.0.1"
    availability_zone: str = "nova"
    servers: list[str] = Field(default_factory=list)
    """Ids of every server the node has, so the conductor notices strays and losses."""
    hypervisor_version: int = 0
    """QEMU's version as Nova encodes it: major * 1000000 + minor * 1000 + micro."""
    cpu_info: dict = Field(default_factory=dict)
    """What os-hypervisors shows as ``cpu_info`` (before 2.88): ``arch``, ``model``,
    ``vendor``, ``topology`` {``sockets``, ``cores``, ``threads``}, ``features``."""
    uptime: str = ""
    """The node's ``uptime`` line, shown by os-hypervisors."""


class SerialConsole(_Message):
    """Reply of ``call("serial_console")``: where the guest's serial port can be reached."""

    host: str
    port: int


class SnapshotResult(_Message):
    """Reply of ``call("snapshot_server")`` once the image data is uploaded."""

    size: int = 0
    checksum: str = ""
