"""The network service as compute sees it: Neutron v2.0 over HTTP, never its modules.

Nova and Neutron meet at the port. ``Networking`` does compute's half:

- ``resolve`` (while the client waits, with the caller's token) turns the
  ``networks`` of a create request into ``Nic``s and its security group names
  into ids, refusing with Nova's errors what can be refused early: an unknown
  network or port, a port in use, ``auto`` when the project sees no network
  or several;
- ``allocate`` (once the scheduler chose a host, with compute's service
  token) creates a port per requested network, or takes over the requested
  port, with ``device_id`` = the server, ``device_owner`` = ``compute:<zone>``
  and ``binding:host_id`` = the host; the port comes back bound (its
  ``binding:vif_details`` name the bridge and the tap) and becomes a
  ``PortBinding`` for the node plus the server's ``addresses``;
- ``deallocate`` deletes the ports compute made and unbinds the ones the user
  brought, when the server goes;
- ``describe`` reads a server's ports and floating IPs again: the network
  service publishes ``network.port.changed`` when a compute port changes
  (a floating IP associated, an address added), and the compute service
  refreshes that server's ``addresses`` from it.

The service token comes from compute's own user (``nova`` in project
``service`` with the ``service`` role, made by the identity bootstrap), whose
password is ``compute.service_password`` or, when that is empty, the one
the bootstrap keeps in ``<data_dir>/credentials.yaml``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tinystack.common.client import ApiClient
from tinystack.common.errors import BadRequest, Conflict, NotFound, Unavailable

__all__ = ["Nic", "Networking", "NetworkError", "Resolved", "SERVICE_USER",
           "SERVICE_PROJECT", "addresses_of"]

log = logging.getLogger(__name__)

SERVICE_USER = "nova"
SERVICE_PROJECT = "service"


class NetworkError(Unavailable):
    """The network service could not be reached, or refused what compute asked."""


@dataclass(frozen=True)
class Nic:
    """One requested NIC: a network to get a new port on, or a port the user made."""

    network_id: str = ""
    port_id: str = ""
    fixed_ip: str = ""
    tag: str = ""


@dataclass
class Resolved:
    """What ``resolve`` found: the NICs and the security group ids for new ports."""

    nics: list[Nic] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("NeutronError") or {}
        return error.get("message") or str(body)[:200]
    except ValueError:
        return response.text[:200]


class Networking(ApiClient):
    def __init__(self, base_url: str, password: Callable[[], str], *, timeout: float = 30.0):
        super().__init__(timeout=timeout)
        self.root = f"{base_url.rstrip('/')}/network/v2.0"
        self.identity_url = f"{base_url.rstrip('/')}/identity/v3/auth/tokens"
        self.password = password
        self._token = ""
        self._renew_at = 0.0
        self._token_lock = asyncio.Lock()

    async def service_token(self) -> str:
        """A token of compute's own user, fetched by password and kept until near expiry."""
        async with self._token_lock:
            if self._token and time.monotonic() < self._renew_at:
                return self._token
            body = {"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": SERVICE_USER, "domain": {"id": "default"},
                    "password": self.password()}}},
                "scope": {"project": {"name": SERVICE_PROJECT, "domain": {"id": "default"}}}}}
            try:
                response = await self.http.post(self.identity_url, json=body)
            except httpx.HTTPError as exc:
                raise NetworkError(f"The identity service is not available: {exc}") from None
            if response.status_code != 201:
                raise NetworkError(f"Compute's service user could not log in "
                                   f"({response.status_code}).")
            self._token = response.headers["X-Subject-Token"]
            expires = response.json()["token"]["expires_at"]
            left = (dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))
                    - dt.datetime.now(dt.timezone.utc)).total_seconds()
            self._renew_at = time.monotonic() + max(0.0, left - 300)
            return self._token

    async def _request(self, method: str, path: str, token: str | None = None,
                       **kwargs: Any) -> httpx.Response:
        token = token or await self.service_token()
        try:
            return await self.http.request(method, f"{self.root}{path}",
                                           headers={"X-Auth-Token": token}, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("network service at %s: %s", self.root, exc)
            raise NetworkError(f"The network service is not available: {exc}") from None

    async def _get(self, path: str, token: str | None = None, **params: Any) -> dict:
        response = await self._request("GET", path, token, params=params)
        if response.status_code != 200:
            raise NetworkError(f"The network service answered {response.status_code} to "
                               f"GET {path}: {_message(response)}")
        return response.json()

    # -- while the client waits ------------------------------------------------------

    async def resolve(self, token: str, project_id: str, networks: str | list | None,
                      security_groups: list[str], count: int) -> Resolved:
        """The NICs a create asks for, checked as Nova checks them (400/409)."""
        if networks in (None, "none", []):
            return Resolved()
        if networks == "auto":
            nics = [Nic(network_id=await self._auto_network(token, project_id))]
        else:
            nics = [await self._nic(token, item, count) for item in networks]
        return Resolved(nics, await self.group_ids(token, project_id,
                                                   security_groups or ["default"]))

    async def _auto_network(self, token: str, project_id: str) -> str:
        owned = (await self._get("/networks", token, project_id=project_id, shared="false",
                                 fields="id"))["networks"]
        shared = (await self._get("/networks", token, shared="true", fields="id"))["networks"]
        found = list(dict.fromkeys(n["id"] for n in owned + shared))
        if not found:
            raise BadRequest(f"Unable to automatically allocate a network for project "
                             f"{project_id}")
        if len(found) > 1:
            raise Conflict("Multiple possible networks found, use a Network ID to be more "
                           "specific.")
        return found[0]

    async def _nic(self, token: str, item: Any, count: int) -> Nic:
        if not isinstance(item, dict):
            raise BadRequest(f"Bad networks format: {item!r}")
        port_id, network_id = item.get("port") or "", item.get("uuid") or ""
        fixed_ip = item.get("fixed_ip") or ""
        if port_id:
            if count > 1:
                raise BadRequest("Unable to launch multiple instances with a single "
                                 "configured port ID. Please launch your instance one by "
                                 "one with different ports.")
            response = await self._request("GET", f"/ports/{port_id}", token)
            if response.status_code == 404:
                raise BadRequest(f"Port id {port_id} could not be found.")
            if response.status_code != 200:
                raise NetworkError(f"The network service answered {response.status_code} "
                                   f"for port {port_id}.")
            port = response.json()["port"]
            if port.get("device_id"):
                raise Conflict(f"Port {port_id} is still in use.")
            return Nic(network_id=port["network_id"], port_id=port_id,
                       tag=item.get("tag") or "")
        if not network_id:
            raise BadRequest("Bad network format: missing 'uuid'")
        if fixed_ip:
            if count > 1:
                raise BadRequest("max_count cannot be greater than 1 if an fixed_ip is "
                                 "specified.")
            import ipaddress  # noqa: PLC0415 - only fixed_ip requests need it
            try:
                ipaddress.ip_address(fixed_ip)
            except ValueError:
                raise BadRequest(f"Invalid fixed IP address ({fixed_ip})") from None
        response = await self._request("GET", f"/networks/{network_id}", token)
        if response.status_code == 404:
            raise BadRequest(f"Network {network_id} could not be found.")
        if response.status_code != 200:
            raise NetworkError(f"The network service answered {response.status_code} for "
                               f"network {network_id}.")
        return Nic(network_id=network_id, fixed_ip=fixed_ip, tag=item.get("tag") or "")

    async def group_ids(self, token: str, project_id: str, names: list[str], *,
                        missing: int = 400) -> list[str]:
        """Ids of the project's security groups by name or id (``missing``: 400 or 404)."""
        wanted = list(dict.fromkeys(names))
        groups = (await self._get("/security-groups", token, project_id=project_id,
                                  fields=["id", "name"]))["security_groups"]
        ids = []
        for name in wanted:
            match = [g["id"] for g in groups if name in (g["id"], g["name"])]
            if not match:
                error = NotFound if missing == 404 else BadRequest
                raise error(f"Security group {name} not found.")
            if len(match) > 1:
                raise Conflict(f"Multiple security groups found matching '{name}'. Use an "
                               f"ID to be more specific.")
            ids.append(match[0])
        return ids

    async def set_groups(self, ports: list[dict], group_ids: list[str]) -> None:
        """Give the server's ports exactly these security groups."""
        for port in ports:
            response = await self._request("PUT", f"/ports/{port['port_id']}", json={
                "port": {"security_groups": group_ids}})
            if response.status_code != 200:
                raise NetworkError(_message(response))

    # -- once a host is chosen ------------------------------------------------------

    async def allocate(self, server_id: str, project_id: str, zone: str, host: str,
                       resolved: Resolved) -> list[dict]:
        """Bound ports for every NIC, in order; on failure, what was made is undone."""
        made: list[dict] = []
        try:
            for nic in resolved.nics:
                made.append(await self._bind(server_id, project_id, zone, host, nic,
                                             resolved.security_group_ids))
        except BaseException:
            await self.deallocate(made)
            raise
        return made

    async def _bind(self, server_id: str, project_id: str, zone: str, host: str, nic: Nic,
                    group_ids: list[str]) -> dict:
        owned = {"device_id": server_id, "device_owner": f"compute:{zone}",
                 "binding:host_id": host}
        if nic.port_id:
            response = await self._request("PUT", f"/ports/{nic.port_id}",
                                           json={"port": owned})
            expected, created = 200, False
        else:
            body = {**owned, "network_id": nic.network_id, "project_id": project_id,
                    "security_groups": group_ids}
            if nic.fixed_ip:
                body["fixed_ips"] = [{"ip_address": nic.fixed_ip}]
            response = await self._request("POST", "/ports", json={"port": body})
            expected, created = 201, True
        if response.status_code != expected:
            raise NetworkError(_message(response))
        port = response.json()["port"]
        return await self.binding(port, created=created)

    async def binding(self, port: dict, *, created: bool) -> dict:
        """What ``Server.ports`` keeps of a port: a ``PortBinding`` and a bit more."""
        network = (await self._get(f"/networks/{port['network_id']}"))["network"]
        details = port.get("binding:vif_details") or {}
        return {
            "port_id": port["id"], "mac": port["mac_address"],
            "device": details.get("tap_name", ""), "bridge": details.get("bridge_name", ""),
            "mtu": network.get("mtu") or 1500, "network_id": port["network_id"],
            "network_name": network.get("name") or port["network_id"],
            "fixed_ips": [{**ip, "network_id": port["network_id"]}
                          for ip in port.get("fixed_ips") or []],
            "created": created,
        }

    async def deallocate(self, ports: list[dict]) -> None:
        """Delete the ports compute made; unbind the ones the user brought. Never raises."""
        for port in ports:
            try:
                if port.get("created", True):
                    response = await self._request("DELETE", f"/ports/{port['port_id']}")
                    ok = response.status_code in (204, 404)
                else:
                    response = await self._request(
                        "PUT", f"/ports/{port['port_id']}",
                        json={"port": {"device_id": "", "device_owner": "",
                                       "binding:host_id": ""}})
                    ok = response.status_code in (200, 404)
                if not ok:
                    log.warning("could not release port %s: %s %s", port["port_id"],
                                response.status_code, _message(response))
            except Exception as exc:  # noqa: BLE001 - logged; the server is gone anyway
                log.warning("could not release port %s: %s", port.get("port_id"), exc)

    async def describe(self, server_id: str, known: list[dict]) -> list[dict]:
        """The server's ports as the network service has them now (``binding`` shape),
        each with its floating IPs under ``floating_ips``."""
        ports = (await self._get("/ports", device_id=server_id))["ports"]
        created = {p["port_id"]: p.get("created", True) for p in known}
        found = []
        for port in ports:
            entry = await self.binding(port, created=created.get(port["id"], True))
            fips = (await self._get("/floatingips", port_id=port["id"]))["floatingips"]
            entry["floating_ips"] = [f["floating_ip_address"] for f in fips]
            found.append(entry)
        order = {p["port_id"]: i for i, p in enumerate(known)}
        return sorted(found, key=lambda p: order.get(p["port_id"], len(order)))


def addresses_of(ports: list[dict]) -> dict:
    """Nova's ``addresses``: network name -> fixed then floating addresses of its ports."""
    out: dict[str, list[dict]] = {}
    for port in ports:
        addrs = out.setdefault(port.get("network_name") or port.get("network_id", ""), [])
        for ip in port.get("fixed_ips") or []:
            address = ip["ip_address"]
            addrs.append({"version": 6 if ":" in address else 4, "addr": address,
                          "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": port["mac"]})
        for address in port.get("floating_ips") or []:
            addrs.append({"version": 6 if ":" in address else 4, "addr": address,
                          "OS-EXT-IPS:type": "floating",
                          "OS-EXT-IPS-MAC:mac_addr": port["mac"]})
    return out
