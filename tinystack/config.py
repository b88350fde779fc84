"""Typed settings for every part of tinystack, read once at start and passed in.

Sources, strongest first: command-line flags (given to ``load`` as keyword
arguments), environment variables (``TINYSTACK_PORT``, nested groups with a
double underscore: ``TINYSTACK_IDENTITY__TOKEN_EXPIRATION``), the TOML file
(``--config``, else ``tinystack.toml`` in the data dir), then the defaults
below. ``etc/tinystack.toml.sample`` documents every option.

Nothing here is a global: ``runner.py`` builds one ``Settings`` and hands the
groups to the services that need them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["ComputeNodeSettings", "ComputeSettings", "IdentitySettings", "ImageSettings", "NetworkSettings", "Settings", "load",
           "ROLES"]

ROLES = ("controller", "compute", "network", "storage")


class IdentitySettings(BaseModel):
    """Keystone's knobs that a deployment really changes."""

    token_expiration: int = 3600
    """Seconds a token lives (Keystone's ``[token] expiration``)."""
    allow_expired_window: int = 172800
    """Seconds after expiry a service may still validate with ``allow_expired``."""
    max_active_keys: int = 3
    """Token keys kept on rotation: one staged, one primary, the rest secondary."""
    password_hash_rounds: int = 12
    """bcrypt cost; Keystone's default is 12 and nothing weaker is accepted."""
    lockout_failure_attempts: int = 0
    """Failed logins before a user is locked out; 0 disables lockout."""
    lockout_duration: int = 1800
    """Seconds a locked-out user stays locked."""
    unique_last_password_count: int = 0
    """A new password may not repeat any of the last N; 0 or 1 disables the check."""
    password_expires_days: int = 0
    """Days a password stays valid; 0 means passwords never expire."""
    minimum_password_age: int = 0
    """Days a user must keep a password before changing it again; 0 disables."""
    cache_ttl: float = 300.0
    """Seconds a validated token (or a remembered identity read) stays cached; any identity
    write makes every cached answer stale at once. 0 keeps them until a write."""
    cache_size: int = Field(default=1000, ge=1)
    """Validated tokens kept cached at most (about 4 kB each), the least recently used
    dropped first."""


class ImageSettings(BaseModel):
    """Glance's knobs that a deployment really changes: limits and import filters."""

    image_size_cap: int = 1099511627776
    """Largest image one upload, stage or web-download may carry, in bytes (Glance's 1 TiB)."""
    user_storage_quota: int = 0
    """Bytes of image data one project may keep in total; 0 means no limit."""
    allowed_schemes: list[str] = Field(default_factory=lambda: ["http", "https"])
    """URL schemes web-download may fetch from; empty allows every scheme not disallowed."""
    disallowed_schemes: list[str] = Field(default_factory=list)
    """URL schemes web-download refuses; ignored when allowed_schemes is set."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts (names or addresses) web-download may fetch from; empty allows any not disallowed."""
    disallowed_hosts: list[str] = Field(default_factory=list)
    """Hosts web-download refuses; ignored when allowed_hosts is set."""
    allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    """Ports web-download may connect to; empty allows every port not disallowed."""
    disallowed_ports: list[int] = Field(default_factory=list)
    """Ports web-download refuses; ignored when allowed_ports is set."""
    default_image: bool = True
    """Upload the default guest image ``tiny`` (built from Debian packages) on first start."""
    guest_cache_dir: str = ""
    """Where that guest is built and cached, shared by every data dir (builds are locked and
    keyed); empty means ``$XDG_CACHE_HOME/tinystack/guest`` (``~/.cache/tinystack/guest``)."""


class ComputeSettings(BaseModel):
    """Nova's knobs that a deployment really changes: timeouts, overcommit, metadata secret."""

    build_timeout: float = 300.0
    """Seconds a server may stay in BUILD without word from its node before it ends in ERROR."""
    action_timeout: float = 300.0
    """Seconds an action (stop, reboot, resize...) may wait for its node before it is dropped."""
    service_down_time: float = 60.0
    """Seconds without a heartbeat after which a compute node counts as down (Nova's 60)."""
    cpu_allocation_ratio: float = 16.0
    """Virtual CPUs the scheduler may place per physical CPU of a node."""
    ram_allocation_ratio: float = 1.5
    """Guest RAM the scheduler may place per MiB of a node's RAM."""
    disk_allocation_ratio: float = 1.0
    """Guest disk the scheduler may place per GiB of a node's disk."""
    force_config_drive: bool = False
    """Give every server a config drive, as if each create asked for one."""
    metadata_proxy_shared_secret: str = ""
    """Secret the metadata proxy signs X-Instance-ID with (HMAC-SHA256), as Neutron's
    metadata agent does; empty means one generated in DATA_DIR/compute/metadata-secret."""
    console_token_ttl: int = 600
    """Seconds a remote console URL stays valid."""
    service_password: str = ""
    """Password of compute's service user ``nova`` (it binds ports in the network service);
    empty means the one the identity bootstrap keeps in DATA_DIR/credentials.yaml."""


class ComputeNodeSettings(BaseModel):
    """The compute agent and its QEMU driver, on a node playing the compute role."""

    accelerator: Literal["auto", "kvm", "tcg"] = "auto"
    """auto: TCG at once, KVM for new guests once a background probe boots a kernel with it."""
    audit_interval: float = 10.0
    """Seconds between the agent's audits of its guests (each also sends a heartbeat)."""
    shutdown_timeout: float = 20.0
    """Seconds a guest gets to shut down cleanly (stop, soft reboot) before it is stopped hard."""
    stop_guests_on_exit: bool = True
    """Stopping tinystack stops its guests and starting it starts them again; false leaves
    them running for the next agent to adopt, as nova-compute does."""
    my_ip: str = "127.0.0.1"
    """This node's address as the controller reaches it (serial consoles listen there)."""


class NetworkSettings(BaseModel):
    """Neutron's knobs that a deployment really changes: segments, MTU, the network node."""

    bootstrap: bool = True
    """On first start create DevStack's layout: ``public`` (flat, external, the floating
    range), and for ``demo`` a ``private`` network, its subnet and ``router1`` to public."""
    floating_range: str = "172.24.4.0/24"
    """CIDR of the bootstrap ``public`` subnet (DevStack's FLOATING_RANGE); its first
    address is the gateway the host carries, the rest are floating IPs."""
    fixed_range: str = "10.0.0.0/26"
    """CIDR of the bootstrap ``private`` subnet of ``demo``."""
    physical_networks: list[str] = Field(default_factory=lambda: ["public"])
    """Physical networks flat provider networks may use (Neutron's flat_networks)."""
    vni_range: tuple[int, int] = (1, 1000)
    """VXLAN network identifiers tenant networks get, both ends included."""
    global_physnet_mtu: int = 1500
    """MTU of the underlying network: flat networks get it, VXLAN ones 50 bytes less."""
    network_node: str = ""
    """Host that runs DHCP and routers when no DHCP agent has reported yet; empty means
    this node. Once agents report, the host of the newest alive DHCP agent is used."""
    agent_down_time: float = 75.0
    """Seconds without a heartbeat after which an agent is shown as not alive."""
    dns_domain: str = "openstacklocal"
    """Domain the DHCP servers give out with the guests' host names."""


class Settings(BaseSettings):
    """Everything ``tinystack up`` needs to know."""

    model_config = SettingsConfigDict(
        env_prefix="TINYSTACK_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("/var/lib/tinystack")
    """Database, keys, images, disks, logs and generated credentials live here."""
    db: str = ""
    """SQLAlchemy URL; empty means SQLite in the data dir. mysql:// and postgresql:// work."""
    bus: str = "memory://"
    """memory:// for the in-process bus, amqp://user:pw@host:5672/ for RabbitMQ."""
    host: str = "127.0.0.1"
    """Address the API listens on."""
    port: int = 8080
    """Port every API shares, each under its own prefix."""
    public_url: str = ""
    """Base URL written to the catalog; empty means http://HOST:PORT."""
    region: str = "RegionOne"
    roles: list[str] = Field(default_factory=lambda: list(ROLES))
    """Node roles this process plays; all of them is the all-in-one cloud."""
    node_name: str = ""
    """Name this node reports (os-services, agents); empty means the host name."""
    clouds_yaml: Path = Field(
        default_factory=lambda: Path.home() / ".config" / "openstack" / "clouds.yaml"
    )
    """clouds.yaml that bootstrap merges its tinystack* entries into."""
    log_level: str = "info"
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    compute_node: ComputeNodeSettings = Field(default_factory=ComputeNodeSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("_TINYSTACK_TOML")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'tinystack.db'}"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def node(self) -> str:
        return self.node_name or os.uname().nodename

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "tinystack.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "tinystack.log"


def load(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build the settings from flags, environment and the TOML file.

    ``flags`` set to None are ignored, so a CLI can pass every option it has.
    The TOML file is ``config_file``, else ``tinystack.toml`` in the data dir
    the flags or environment name, when it exists.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    if config_file is None:
        data_dir = given.get("data_dir") or os.environ.get("TINYSTACK_DATA_DIR")
        candidate = Path(data_dir or Settings.model_fields["data_dir"].default) / "tinystack.toml"
        config_file = candidate if candidate.exists() else None
    if config_file is not None:
        os.environ["_TINYSTACK_TOML"] = str(config_file)
    try:
        return Settings(**given)
    finally:
        os.environ.pop("_TINYSTACK_TOML", None)
