"""Talking to real guests from the host: SSH with the key the guest read from metadata."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

__all__ = ["ssh"]


def ssh(key: Path, address: str, command: str, timeout: float = 40) -> subprocess.CompletedProcess:
    """Run ``command`` as root in the guest at ``address``; retried while ssh itself fails
    (exit 255: dropbear not up yet) until ``timeout``. The last attempt's result."""
    argv = ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", f"root@{address}", command]
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 255 or time.monotonic() > deadline:
            return result
        time.sleep(1)
