"""The per-node cache of base images: fetched once from the image service, shared by guests.

``ImageCache(directory).fetch(ref, token, kind="disk")`` returns the path of
the image ``ref`` names, downloading it first if this node does not have it:
streamed to a temporary file beside the cache, its checksum checked, a disk
image inspected with ``qemu-img`` (probed format must match the declared one,
no backing or external data file: an image must not read the host's files),
converted to qcow2 if it is in another format, and only then renamed into
place. So a file in the cache is always whole and checked, and a crash leaves
at most a ``.part`` file, which the next start removes. Fetches of one image
share one download, which is cancelled (its ``.part`` removed) when the last
fetch waiting for it is.

``upload_image`` is the other direction: a snapshot's file sent to the image
service with ``PUT`` (Glance's image data call).

Each cached image has ``<id>.json`` beside it: its kind (disk, kernel,
ramdisk), format and virtual size. The QEMU driver (``drivers/qemu.py``) is
the user; removal of images nobody uses is left for later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import uuid
from pathlib import Path

import httpx

from tinystack.compute import host
from tinystack.compute.drivers.base import PermanentFailure, TemporaryFailure
from tinystack.compute.messages import ImageRef

__all__ = ["CachedImage", "ImageCache", "upload_image"]

log = logging.getLogger(__name__)

_PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_USABLE = {"qcow2": "qcow2", "raw": "raw", "ami": "raw"}
_CONVERTIBLE = {"vmdk", "vdi", "vhd", "vhdx", "qed"}
_QEMU_NAMES = {"vhd": "vpc"}
_CHUNK = 1 << 20


class CachedImage:
    """An image in the cache: ``path``, ``format`` (as qemu names it), ``virtual_size``."""

    def __init__(self, path: Path, format: str, virtual_size: int):
        self.path, self.format, self.virtual_size = path, format, virtual_size


class ImageCache:
    def __init__(self, directory: Path, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.directory = directory
        self.timeout = timeout
        self._transport = transport
        """For tests: an ``httpx.MockTransport`` standing in for the image service."""
        self._fetching: dict[str, asyncio.Future] = {}
        self._waiters: dict[str, int] = {}

    def clean(self) -> None:
        """Remove downloads a crash left half done."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for part in self.directory.glob(".*.part"):
            part.unlink(missing_ok=True)

    def cached(self, kind: str) -> list[Path]:
        """Paths of the cached images of ``kind`` (``disk``, ``kernel``, ``ramdisk``)."""
        found = []
        for meta in self.directory.glob("*.json"):
            try:
                if json.loads(meta.read_text()).get("kind") == kind:
                    found.append(meta.with_suffix(""))
            except (OSError, ValueError):
                continue
        return [p for p in found if p.exists()]

    async def fetch(self, ref: ImageRef, token: str, *, kind: str = "disk") -> CachedImage:
        """The cached copy of ``ref``, downloading it first if needed."""
        if not _PLAIN_ID.match(ref.id):
            raise PermanentFailure(f"image id {ref.id!r} is not a plain name")
        have = self._read(ref.id)
        if have is not None:
            return have
        pending = self._fetching.get(ref.id)
        if pending is None:
            pending = asyncio.ensure_future(self._download(ref, token, kind))
            self._fetching[ref.id] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(ref.id, None))
        self._waiters[ref.id] = self._waiters.get(ref.id, 0) + 1
        try:
            return await asyncio.shield(pending)
        finally:
            self._waiters[ref.id] -= 1
            if not self._waiters[ref.id]:
                del self._waiters[ref.id]
                pending.cancel()   # nobody wants it any more (a delete during the build)

    def _read(self, image_id: str) -> CachedImage | None:
        path = self.directory / image_id
        try:
            meta = json.loads(path.with_suffix(path.suffix + ".json").read_text())
        except (OSError, ValueError):
            return None
        if not path.exists():
            return None
        return CachedImage(path, meta["format"], meta["virtual_size"])

    async def _download(self, ref: ImageRef, token: str, kind: str) -> CachedImage:
        self.directory.mkdir(parents=True, exist_ok=True)
        part = self.directory / f".{ref.id}.{uuid.uuid4().hex[:8]}.part"
        try:
            digest, size = await self._stream(ref, token, part)
            self._check_digest(ref, digest, size)
            if kind == "disk":
                image_format, virtual_size, part = await self._check_disk(ref, part)
            else:
                image_format, virtual_size = "raw", size
            path = self.directory / ref.id
            meta = {"kind": kind, "format": image_format, "virtual_size": virtual_size,
                    "checksum": ref.checksum, "size": size}
            os.replace(part, path)
            meta_path = path.with_suffix(path.suffix + ".json")
            meta_tmp = self.directory / f".{ref.id}.json.part"
            meta_tmp.write_text(json.dumps(meta))
            os.replace(meta_tmp, meta_path)
            log.info("compute: cached image %s (%s, %d bytes)", ref.id, image_format, size)
            return CachedImage(path, image_format, virtual_size)
        finally:
            part.unlink(missing_ok=True)

    async def _stream(self, ref: ImageRef, token: str, part: Path) -> tuple[dict, int]:
        if not ref.download_url:
            raise PermanentFailure(f"image {ref.id} has no location this node can read")
        hashes = {"md5": hashlib.md5(usedforsecurity=False), "sha256": hashlib.sha256(),
                  "sha512": hashlib.sha512()}
        size = 0
        headers = {"X-Auth-Token": token} if token else {}
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0))
        try:
            async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as client:
                async with client.stream("GET", ref.download_url, headers=headers) as response:
                    self._check_status(ref, response.status_code, bool(token))
                    with open(part, "wb") as out:
                        async for chunk in response.aiter_bytes(_CHUNK):
                            size += len(chunk)
                            for h in hashes.values():
                                h.update(chunk)
                            await asyncio.to_thread(out.write, chunk)
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"could not download image {ref.id}: {exc}") from None
        return {name: h.hexdigest() for name, h in hashes.items()}, size

    @staticmethod
    def _check_status(ref: ImageRef, status: int, with_token: bool) -> None:
        if status == 200:
            return
        if status == 401 and not with_token:
            # A spec re-sent by the controller's audit has no token; the build's own spec,
            # which has one, is on its way.
            raise TemporaryFailure(f"no token yet to read image {ref.id} with (the image "
                                   "service answered 401)")
        if status in (401, 403):
            raise PermanentFailure(f"the image service refused to hand out image {ref.id} "
                                   f"({status})")
        if status in (404, 410):
            raise PermanentFailure(f"image {ref.id} has no data in the image service ({status})")
        raise TemporaryFailure(f"the image service answered {status} for image {ref.id}")

    @staticmethod
    def _check_digest(ref: ImageRef, digest: dict, size: int) -> None:
        if ref.size is not None and ref.size != size:
            raise TemporaryFailure(f"image {ref.id} arrived with {size} bytes, "
                                   f"not the {ref.size} the image service promised")
        if not ref.checksum:
            return
        algorithm = {32: "md5", 64: "sha256", 128: "sha512"}.get(len(ref.checksum))
        if algorithm is None:
            raise PermanentFailure(f"image {ref.id} has a checksum of unknown kind")
        if digest[algorithm] != ref.checksum.lower():
            raise TemporaryFailure(f"image {ref.id} arrived corrupted ({algorithm} mismatch)")

    async def _check_disk(self, ref: ImageRef, part: Path) -> tuple[str, int, Path]:
        declared = ref.disk_format
        if declared not in _USABLE and declared not in _CONVERTIBLE:
            raise PermanentFailure(f"disk format {declared!r} of image {ref.id} cannot boot "
                                   "on this compute node")
        try:
            info = await host.qemu_img_info(part)
        except host.HostError as exc:
            raise PermanentFailure(f"image {ref.id} is not a readable disk image: {exc}") from None
        probed = info.get("format")
        expected = _QEMU_NAMES.get(declared, _USABLE.get(declared, declared))
        if probed != expected:
            raise PermanentFailure(f"image {ref.id} says it is {declared} but its data is "
                                   f"{probed}; upload it with the right disk format")
        if info.get("backing-filename") or info.get("format-specific", {}).get("data", {}).get(
                "data-file"):
            raise PermanentFailure(f"image {ref.id} refers to other files (a backing or data "
                                   "file); upload a self-contained image")
        virtual_size = int(info.get("virtual-size", 0))
        if declared in _CONVERTIBLE:
            converted = part.with_name(part.name + ".qcow2.part")
            try:
                await host.qemu_img_convert(part, expected, converted)
            except host.HostError as exc:
                converted.unlink(missing_ok=True)
                raise PermanentFailure(f"image {ref.id} could not be converted: {exc}") from None
            part.unlink(missing_ok=True)
            return "qcow2", virtual_size, converted
        return expected, virtual_size, part


async def upload_image(path: Path, url: str, token: str, *, timeout: float = 30.0,
                       transport: httpx.AsyncBaseTransport | None = None) -> tuple[int, str]:
    """``PUT`` the file at ``path`` to ``url``; the (size, md5) of what was sent."""
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0

    async def chunks():
        nonlocal size
        with open(path, "rb") as data:
            while chunk := await asyncio.to_thread(data.read, _CHUNK):
                md5.update(chunk)
                size += len(chunk)
                yield chunk

    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["X-Auth-Token"] = token
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0),
                                     transport=transport) as client:
            response = await client.put(url, content=chunks(), headers=headers)
    except httpx.HTTPError as exc:
        raise TemporaryFailure(f"could not upload the snapshot: {exc}") from None
    if response.status_code >= 500:
        raise TemporaryFailure(f"the image service answered {response.status_code} to the "
                               "snapshot upload")
    if response.status_code >= 400:
        raise PermanentFailure(f"the image service refused the snapshot "
                               f"({response.status_code}): {response.text[:200]}")
    return size, md5.hexdigest()
