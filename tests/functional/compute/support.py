"""Stand-ins for the compute API tests: a fake agent, a fake image service, a Nova client.

- ``FakeAgent`` serves ``compute.<host>`` on the cloud's in-process bus as a
  node's agent would: it records every ``ServerSpec`` it is sent and casts a
  ``ServerReport`` back (the power state the spec asks for), beats with
  ``NodeReport``, answers console and snapshot calls. Knobs: ``fail_on``
  ({"spawn", "reboot", "snapshot", "console"}), ``silent`` (never reports),
  the node's size and zone.
- ``FakeGlance`` is Glance v2 for what compute asks of it (show, create,
  delete an image), with images of any size the test says.
- ``NovaClient`` talks to the cloud's ASGI app: tokens for the bootstrap
  users, ``compute(...)`` with a microversion, and waits for a server's status.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tinystack.cloud import Cloud
from tinystack.compute.messages import (
    AGENT_TARGET,
    CONDUCTOR_TARGET,
    NodeReport,
    ServerReport,
    ServerSpec,
)

__all__ = ["FakeAgent", "FakeGlance", "NovaClient", "DEADLINE", "settle"]

DEADLINE = 5.0
_POWER = {"active": "running", "stopped": "shutdown", "paused": "paused",
          "suspended": "suspended"}


async def settle(cloud: Cloud) -> None:
    """Let the bus deliver and the compute service finish its background work."""
    compute = cloud.services["compute"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        for _ in range(5):
            await asyncio.sleep(0)
        busy = bool(cloud.bus._tasks) or bool(compute.core._tasks)
        await compute.core.idle()
        if not busy and not cloud.bus._tasks:
            return
    raise AssertionError("the compute service did not settle")


class FakeAgent:
    """A compute node's agent in a few lines; see the module docstring."""

    def __init__(self, cloud: Cloud, host: str, *, vcpus: int = 4, memory_mb: int = 8192,
                 local_gb: int = 100, zone: str = "nova"):
        self.cloud, self.host = cloud, host
        self.vcpus, self.memory_mb, self.local_gb, self.zone = vcpus, memory_mb, local_gb, zone
        self.specs: list[ServerSpec] = []
        self.servers: dict[str, ServerSpec] = {}
        self.power: dict[str, str] = {}
        self.fail_on: set[str] = set()
        self.silent = False
        self.snapshots: list[dict] = []
        self.console_lines = ["tinystack guest booting", "login: ready"]
        self.serial_server: asyncio.AbstractServer | None = None

    @property
    def bus(self):
        return self.cloud.bus

    async def start(self) -> FakeAgent:
        await self.bus.serve(AGENT_TARGET(self.host), self)
        await self.heartbeat()
        return self

    async def heartbeat(self, servers: list[str] | None = None) -> None:
        live = [s for s in self.servers.values() if s.want != "deleted"]
        report = NodeReport(
            host=self.host, vcpus=self.vcpus, memory_mb=self.memory_mb, local_gb=self.local_gb,
            vcpus_used=sum(s.vcpus for s in live), memory_mb_used=sum(s.memory_mb for s in live),
            local_gb_used=sum(s.root_gb for s in live), running_vms=len(live),
            availability_zone=self.zone, hypervisor_version=7002000,
            cpu_info={"arch": "x86_64", "model": "qemu64"}, uptime=" 10:00:00 up 1 day",
            servers=sorted(s.id for s in live) if servers is None else servers)
        await self.bus.cast(CONDUCTOR_TARGET, "report_node", report=report)
        await settle(self.cloud)

    def for_server(self, server_id: str) -> list[ServerSpec]:
        return [s for s in self.specs if s.id == server_id]

    # -- served methods -----------------------------------------------------------------

    async def sync_server(self, spec: dict, **_) -> None:
        parsed = ServerSpec.model_validate(spec)
        self.specs.append(parsed)
        known = self.servers.get(parsed.id)
        if known is not None and known.revision > parsed.revision:
            return
        self.servers[parsed.id] = parsed
        if self.silent:
            return
        if parsed.want == "deleted":
            self.power.pop(parsed.id, None)
            await self.report(parsed, "deleted", "nostate")
            return
        first = known is None
        if ("spawn" in self.fail_on and first) or ("reboot" in self.fail_on and parsed.reboot):
            await self.report(parsed, "error", "nostate",
                              fault="The guest could not start: qemu exited with status 1")
            return
        self.power[parsed.id] = _POWER[parsed.want]
        await self.report(parsed, parsed.want, _POWER[parsed.want],
                          reboot_done=bool(parsed.reboot))

    async def report(self, spec: ServerSpec, state: str, power: str, *,
                     fault: str | None = None, reboot_done: bool = False) -> None:
        await self.bus.cast(CONDUCTOR_TARGET, "report_server", report=ServerReport(
            server_id=spec.id, host=self.host, revision=spec.revision, power_state=power,
            state=state, fault=fault, reboot_done=reboot_done,
            launched_at="2026-01-01T00:00:00"))

    async def console_output(self, server_id: str, length: int | None = None, **_) -> str:
        if "console" in self.fail_on:
            raise FileNotFoundError(f"no console log for {server_id}")
        lines = self.console_lines if length is None else self.console_lines[-length:]
        return "\n".join(lines) + "\n"

    async def snapshot_server(self, server_id: str, image_id: str, upload_url: str,
                              token: str, disk_format: str = "qcow2", **_) -> dict:
        if "snapshot" in self.fail_on:
            raise RuntimeError("qemu-img convert failed")
        self.snapshots.append({"server_id": server_id, "image_id": image_id,
                               "upload_url": upload_url, "token": token})
        return {"size": 1024, "checksum": "0" * 32}

    async def serial_console(self, server_id: str, **_) -> dict:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"login: ")
            await writer.drain()
            while data := await reader.read(100):
                writer.write(data.upper())
                await writer.drain()
            writer.close()

        if self.serial_server is None:
            self.serial_server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = self.serial_server.sockets[0].getsockname()[1]
        return {"host": "127.0.0.1", "port": port}

    async def close(self) -> None:
        if self.serial_server is not None:
            self.serial_server.close()
            await self.serial_server.wait_closed()


@dataclass
class FakeGlance:
    """Glance v2's image records, as far as compute uses them."""

    images: dict[str, dict] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    def add(self, *, size: int = 16 * 1024 * 1024, min_disk: int = 0, min_ram: int = 0,
            status: str = "active", name: str = "tiny", **properties: Any) -> str:
        image_id = str(uuid.uuid4())
        self.images[image_id] = {
            "id": image_id, "name": name, "status": status, "visibility": "public",
            "size": size, "min_disk": min_disk, "min_ram": min_ram, "disk_format": "qcow2",
            "container_format": "bare", "checksum": "c" * 32, "tags": [],
            "self": f"/v2/images/{image_id}", "file": f"/v2/images/{image_id}/file",
            **properties}
        return image_id

    def app(self) -> Starlette:
        async def show(request: Request) -> Response:
            image = self.images.get(request.path_params["image_id"])
            if image is None:
                return JSONResponse({"message": "not found"}, 404)
            return JSONResponse(image)

        async def create(request: Request) -> Response:
            body = await request.json()
            image_id = str(uuid.uuid4())
            self.images[image_id] = {**body, "id": image_id, "status": "queued",
                                     "size": None}
            return JSONResponse(self.images[image_id], 201)

        async def delete(request: Request) -> Response:
            image_id = request.path_params["image_id"]
            self.deleted.append(image_id)
            return Response(status_code=204 if self.images.pop(image_id, None) else 404)

        return Starlette(routes=[
            Route("/image/v2/images/{image_id}", show, methods=["GET"]),
            Route("/image/v2/images/{image_id}", delete, methods=["DELETE"]),
            Route("/image/v2/images", create, methods=["POST"]),
        ])


class NovaClient:
    """httpx on a Cloud's ASGI app, speaking Keystone for tokens and Nova for the rest."""

    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=cloud.asgi),
                                      base_url="http://testserver")
        credentials = cloud.settings.data_dir / "credentials.yaml"
        self.passwords = yaml.safe_load(credentials.read_text())
        self._tokens: dict[str, str] = {}

    async def token(self, user: str = "demo") -> str:
        if user not in self._tokens:
            project = {"admin": "admin", "demo": "demo", "alt_demo": "alt_demo"}[user]
            body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": self.passwords[user]}}},
                "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
            r = await self.http.post("/identity/v3/auth/tokens", json=body)
            assert r.status_code == 201, r.text
            self._tokens[user] = r.headers["X-Subject-Token"]
        return self._tokens[user]

    async def project_id(self, user: str = "demo") -> str:
        r = await self.http.get("/identity/v3/auth/tokens", headers={
            "X-Auth-Token": await self.token(user), "X-Subject-Token": await self.token(user)})
        return r.json()["token"]["project"]["id"]

    async def compute(self, method: str, path: str, *, user: str = "demo",
                      mv: str | None = None, headers: dict | None = None,
                      **kwargs: Any) -> httpx.Response:
        headers = {"X-Auth-Token": await self.token(user), **(headers or {})}
        if mv is not None:
            headers["OpenStack-API-Version"] = f"compute {mv}"
        return await self.http.request(method, f"/compute/v2.1{path}", headers=headers,
                                       **kwargs)

    async def ok(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        r = await self.compute(method, path, **kwargs)
        assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    async def create_server(self, image_id: str, *, flavor: str = "42", name: str = "vm",
                            user: str = "demo", mv: str = "2.100", expect: int = 202,
                            wait: bool = True, **fields: Any) -> dict:
        body = {"server": {"name": name, "imageRef": image_id, "flavorRef": flavor,
                           "networks": "none", **fields.pop("server", {}), **fields}}
        hints = body["server"].pop("os:scheduler_hints", None)
        if hints:
            body["os:scheduler_hints"] = hints
        r = await self.compute("POST", "/servers", user=user, mv=mv, json=body)
        assert r.status_code == expect, r.text
        if expect != 202:
            return r.json()
        await settle(self.cloud)
        return r.json()

    async def server(self, server_id: str, *, user: str = "demo", mv: str = "2.100") -> dict:
        return (await self.ok("GET", f"/servers/{server_id}", user=user, mv=mv))["server"]

    async def action(self, server_id: str, body: dict, *, user: str = "demo",
                     mv: str = "2.100", expect: int = 202) -> Any:
        r = await self.compute("POST", f"/servers/{server_id}/action", user=user, mv=mv,
                               json=body)
        assert r.status_code == expect, r.text
        await settle(self.cloud)
        return r.json() if r.content else None

    async def aclose(self) -> None:
        await self.http.aclose()
