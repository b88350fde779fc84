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
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["IdentitySettings", "Settings", "load", "ROLES"]

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
    """Seconds a validated token stays cached; any identity write empties the cache."""


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
