"""The default guest image ("tiny"), built on this machine from Debian packages.

``build_guest_image(cache_dir)`` returns a ``GuestImage`` (kernel, initramfs,
qcow2 root disk and how to register them); it builds once and then finds the
build in ``cache_dir`` (the image service passes ``image.guest_cache_dir``, by default
``~/.cache/tinystack/guest``, shared by every data dir). What the
guest does at boot is in ``init.sh``; how it is put together is in
``build.py``, which is the place to start reading. ``READY_RE`` matches the
line the guest prints on its serial console once it is reachable.
"""

import re

from tinystack.image.guest.build import GuestBuildError, GuestImage, build_guest_image

__all__ = ["READY_RE", "GuestBuildError", "GuestImage", "build_guest_image"]

READY_RE = re.compile(
    r"tinystack-guest ready: hostname=(?P<hostname>\S+) addresses=(?P<addresses>\S+)"
    r"(?: uptime=(?P<uptime>[0-9.]+))?"
)
"""The guest's ready line; ``addresses`` is comma separated CIDRs, or ``none``."""
