"""What the first start of the compute service makes, and every later one checks.

DevStack's default flavors (``flavors.DEFAULTS``) when there are none, the
controller's own services in os-services, and the metadata proxy's shared
secret when the settings do not give one: 32 random bytes kept in
``<data_dir>/compute/metadata-secret`` (mode 0600), which the metadata proxy
of an all-in-one cloud reads too.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["metadata_secret", "SECRET_FILE"]

SECRET_FILE = Path("compute") / "metadata-secret"


def metadata_secret(configured: str, data_dir: Path) -> str:
    """The shared secret: the configured one, else the one kept in the data dir."""
    if configured:
        return configured
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:  # a racing start wrote it first
        secret = path.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return secret
