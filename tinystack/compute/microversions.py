"""Compute API microversions: which one a request asked for, and the headers of the answer.

A client asks with ``OpenStack-API-Version: compute 2.47`` (from 2.27 on) or
``X-OpenStack-Nova-API-Version: 2.47``; no header means 2.1, ``latest``
means ``MAX``. A malformed version is a 400 and one outside [MIN, MAX] a 406,
with Nova's messages. Every answer under ``/v2.1`` names the version used in
both headers and says ``Vary`` on them.

``MAX`` is the highest version whose every change to the APIs tinystack
serves is implemented; ``docs/compute.md`` lists what each version changes
here. Handlers test a request's version with ``mv >= "2.47"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from tinystack.common.errors import BadRequest, DomainError

__all__ = ["Microversion", "MIN", "MAX", "NotAcceptable", "requested", "response_headers"]

_FORMAT = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


class NotAcceptable(DomainError):
    code = 406
    title = "Not Acceptable"


@total_ordering
@dataclass(frozen=True)
class Microversion:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Microversion:
        match = _FORMAT.match(text.strip())
        if match is None:
            raise BadRequest(f"API Version String {text} is of invalid format. Must be of "
                             "format MajorNum.MinorNum.")
        return cls(int(match.group(1)), int(match.group(2)))

    def _key(self, other: object) -> tuple[int, int]:
        if isinstance(other, str):
            other = Microversion.parse(other)
        if not isinstance(other, Microversion):
            return NotImplemented  # type: ignore[return-value]
        return (other.major, other.minor)

    def __eq__(self, other: object) -> bool:
        key = self._key(other)
        return key is not NotImplemented and (self.major, self.minor) == key

    def __lt__(self, other: object) -> bool:
        return (self.major, self.minor) < self._key(other)

    def __hash__(self) -> int:
        return hash((self.major, self.minor))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


MIN = Microversion(2, 1)
MAX = Microversion(2, 100)


def _from_new_header(value: str) -> str | None:
    """The compute entry of ``OpenStack-API-Version`` ("compute 2.47, image 2.5")."""
    for item in value.split(","):
        words = item.split()
        if len(words) == 2 and words[0].lower() == "compute":
            return words[1]
    return None


def requested(headers) -> Microversion:
    """The version a request asked for; raises BadRequest or NotAcceptable."""
    text = None
    new = headers.get("openstack-api-version")
    if new:
        text = _from_new_header(new)
    if text is None:
        text = headers.get("x-openstack-nova-api-version")
    if not text:
        return MIN
    if text.strip().lower() == "latest":
        return MAX
    version = Microversion.parse(text)
    if not MIN <= version <= MAX:
        raise NotAcceptable(f"Version {version} is not supported by the API. Minimum is "
                            f"{MIN} and maximum is {MAX}.")
    return version


def response_headers(version: Microversion) -> list[tuple[bytes, bytes]]:
    return [(b"openstack-api-version", f"compute {version}".encode()),
            (b"x-openstack-nova-api-version", str(version).encode()),
            (b"vary", b"OpenStack-API-Version, X-OpenStack-Nova-API-Version")]
