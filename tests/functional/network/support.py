"""Stand-ins for the network API tests: a Neutron client and agents that only listen.

- ``NeutronClient`` talks to a ``Cloud``'s ASGI app (paths relative to the
  network prefix: ``/v2.0/networks``) as ``demo``, ``alt_demo`` or ``admin``
  (each scoped to its own project; ``None`` sends no token), plus users it
  makes with one role (``await neutron.user_with("reader", project="demo")``).
  Shortcuts create resources and assert the status.
- ``AgentRecorder`` serves ``network-l2.<host>``, ``network-dhcp.<host>`` and
  ``network-l3.<host>`` on the cloud's in-process bus and records every spec
  it is cast, parsed with ``messages.py``: ``recorder.sent("sync_port")``.
- ``settle(cloud)`` lets the bus deliver what was cast.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

from tinystack.cloud import Cloud
from tinystack.network import messages as m

__all__ = ["NeutronClient", "AgentRecorder", "Recorded", "settle", "client_for", "HOST",
           "NODE"]

HOST = "compute1"
"""The compute host tests bind ports to."""
NODE = "netnode"
"""The network node the tests' cloud is configured with."""

_SPECS = {"sync_port": m.PortSpec, "sync_network": m.NetworkSpec, "sync_dhcp": m.DhcpSpec,
          "sync_router": m.RouterSpec}


async def settle(cloud: Cloud, deadline: float = 10.0) -> None:
    """Until every cast on the in-process bus has been handled (its handlers may use
    worker threads, so this polls with a deadline)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    quiet = 0
    while loop.time() < give_up:
        quiet = quiet + 1 if not cloud.bus._tasks else 0
        if quiet >= 3:
            return
        await asyncio.sleep(0 if quiet else 0.002)
    raise AssertionError("the bus did not settle")


@dataclass
class Recorded:
    target: str
    method: str
    spec: Any


class _Endpoint:
    def __init__(self, recorder: AgentRecorder, target: str):
        self.recorder, self.target = recorder, target

    async def _record(self, method: str, spec: dict) -> None:
        self.recorder.casts.append(Recorded(self.target, method,
                                            _SPECS[method].model_validate(spec)))

    async def sync_port(self, spec: dict, **_) -> None:
        await self._record("sync_port", spec)

    async def sync_network(self, spec: dict, **_) -> None:
        await self._record("sync_network", spec)

    async def sync_dhcp(self, spec: dict, **_) -> None:
        await self._record("sync_dhcp", spec)

    async def sync_router(self, spec: dict, **_) -> None:
        await self._record("sync_router", spec)


@dataclass
class AgentRecorder:
    """Listens as the agents of some hosts would, and remembers what it heard."""

    cloud: Cloud
    casts: list[Recorded] = field(default_factory=list)

    async def listen(self, *hosts: str) -> AgentRecorder:
        for host in hosts:
            for target in (m.l2_target(host), m.dhcp_target(host), m.l3_target(host)):
                await self.cloud.bus.serve(target, _Endpoint(self, target))
        return self

    def sent(self, method: str | None = None, target: str | None = None) -> list[Recorded]:
        return [c for c in self.casts if (method is None or c.method == method)
                and (target is None or c.target == target)]

    def specs(self, method: str, target: str | None = None) -> list[Any]:
        return [c.spec for c in self.sent(method, target)]

    def last(self, method: str, key: str, target: str | None = None) -> Any:
        """The newest spec for one resource id (``network_id`` for DHCP)."""
        found = [s for s in self.specs(method, target)
                 if getattr(s, "id", None) == key or getattr(s, "network_id", None) == key]
        assert found, f"no {method} for {key} (casts: {[c.method for c in self.casts]})"
        return max(found, key=lambda s: s.revision)

    def clear(self) -> None:
        self.casts.clear()


@dataclass
class NeutronClient:
    http: httpx.AsyncClient
    cloud: Cloud
    passwords: dict[str, str]
    _tokens: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def component(self):
        return self.cloud.services["network"]

    async def login(self, user: str, project: str | None = None) -> tuple[str, str]:
        """(token, project id) for ``user`` scoped to ``project`` (its own by default)."""
        key = f"{user}@{project or user}"
        if key not in self._tokens:
            body = {"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"id": "default"},
                    "password": self.passwords[user]}}},
                "scope": {"project": {"name": project or user, "domain": {"id": "default"}}}}}
            r = await self.http.post("http://testserver/identity/v3/auth/tokens", json=body)
            assert r.status_code == 201, r.text
            self._tokens[key] = (r.headers["X-Subject-Token"],
                                 r.json()["token"]["project"]["id"])
        return self._tokens[key]

    async def project(self, user: str) -> str:
        return (await self.login(user))[1]

    async def user_with(self, role: str, project: str = "demo") -> str:
        """A new user holding only ``role`` on ``project``; its name (log in with ``as_``)."""
        admin = (await self.login("admin"))[0]
        identity = "http://testserver/identity/v3"
        headers = {"X-Auth-Token": admin}
        name = f"{role}-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        r = await self.http.post(f"{identity}/users", headers=headers, json={"user": {
            "name": name, "domain_id": "default", "password": password}})
        assert r.status_code == 201, r.text
        user_id = r.json()["user"]["id"]
        roles = (await self.http.get(f"{identity}/roles?name={role}", headers=headers)).json()
        project_id = await self.project(project)
        r = await self.http.put(f"{identity}/projects/{project_id}/users/{user_id}/roles/"
                                f"{roles['roles'][0]['id']}", headers=headers)
        assert r.status_code == 204, r.text
        self.passwords[name] = password
        await self.login(name, project)
        self._tokens[f"{name}@{name}"] = self._tokens[f"{name}@{project}"]
        return name

    async def request(self, method: str, path: str, as_: str | None = "demo",
                      headers: dict | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(headers or {})
        if as_ is not None:
            headers["X-Auth-Token"] = (await self.login(as_))[0]
        response = await self.http.request(method, path, headers=headers, **kwargs)
        await settle(self.cloud)
        return response

    async def get(self, path: str, as_: str | None = "demo", **kw) -> httpx.Response:
        return await self.request("GET", path, as_, **kw)

    async def post(self, path: str, body: Any = None, as_: str | None = "demo",
                   **kw) -> httpx.Response:
        return await self.request("POST", path, as_, json=body, **kw)

    async def put(self, path: str, body: Any = None, as_: str | None = "demo",
                  **kw) -> httpx.Response:
        return await self.request("PUT", path, as_, json=body, **kw)

    async def delete(self, path: str, as_: str | None = "demo", **kw) -> httpx.Response:
        return await self.request("DELETE", path, as_, **kw)

    # -- shortcuts ---------------------------------------------------------------

    async def create(self, kind: str, as_: str = "demo", expect: int = 201,
                     **attrs: Any) -> dict:
        """POST /v2.0/<kind>s with ``attrs``; the created resource (or the error body)."""
        plural = {"security_group": "security-groups",
                  "security_group_rule": "security-group-rules",
                  "rbac_policy": "rbac-policies", "floatingip": "floatingips"}.get(
            kind, f"{kind}s")
        r = await self.post(f"/v2.0/{plural}", {kind: attrs}, as_)
        assert r.status_code == expect, r.text
        body = r.json()
        return body.get(kind, body) if expect == 201 else body

    async def show(self, plural: str, resource_id: str, as_: str = "demo",
                   expect: int = 200) -> dict:
        r = await self.get(f"/v2.0/{plural}/{resource_id}", as_)
        assert r.status_code == expect, r.text
        return r.json()

    async def listing(self, plural: str, query: str = "", as_: str = "demo") -> list[dict]:
        r = await self.get(f"/v2.0/{plural}{query}", as_)
        assert r.status_code == 200, r.text
        return r.json()[plural.replace("-", "_")]

    async def network_with_subnet(self, as_: str = "demo", cidr: str = "10.1.0.0/24",
                                  **subnet: Any) -> tuple[dict, dict]:
        network = await self.create("network", as_, name="net")
        sub = await self.create("subnet", as_, network_id=network["id"], ip_version=4,
                                cidr=cidr, name="sub", **subnet)
        return network, sub


def client_for(cloud: Cloud) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=cloud.asgi),
                             base_url="http://testserver/network")


def load_passwords(cloud: Cloud) -> dict[str, str]:
    return yaml.safe_load((cloud.settings.data_dir / "credentials.yaml").read_text())
