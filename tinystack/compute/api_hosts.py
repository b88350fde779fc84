"""Routes for the cloud's machinery: os-hypervisors, os-services, os-availability-zone.

Hypervisor figures are what each node's agent last reported (its totals and
its guests' usage); before 2.88 they are shown in full, from 2.88 only the
identity, state and uptime, as Nova. Services are enabled, disabled and
forced down by admins (``PUT /os-services/{id}`` from 2.53, the
``enable``/``disable``/``force-down`` actions before). The service side is
``hosts.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest, NotFound
from tinystack.common.http import json_response, read_json
from tinystack.compute import schemas
from tinystack.compute.views import iso_micro
from tinystack.compute.web import Handlers, flag, int_param, no_content

__all__ = ["HostHandlers", "routes"]


class HostHandlers(Handlers):
    # -- hypervisors --------------------------------------------------------------------

    async def _hypervisors(self, request: Request, detail: bool) -> Response:
        caller = await self.enforce(request, "os-hypervisors:list-detail" if detail
                                    else "os-hypervisors:list")
        mv = self.mv(request)
        pattern = with_servers = None
        if mv >= "2.53":
            pattern = self.query(request, "hypervisor_hostname_pattern")
            with_servers = flag(self.query(request, "with_servers"), "with_servers")
        found = await self.run(self.c.hosts.hypervisors, pattern=pattern)
        if pattern and not found:
            raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
        limit = None
        if mv >= "2.33":
            limit = int_param(self.query(request, "limit"), "limit")
            marker = self.query(request, "marker")
            if marker is not None:
                ids = [str(v.node.uuid if mv >= "2.53" else v.node.id) for v in found]
                if marker not in ids:
                    raise BadRequest(f"marker [{marker}] not found")
                found = found[ids.index(marker) + 1:]
            if limit is not None:
                found = found[:limit]
        shaper = self.shaper(request, caller)
        items = [shaper.hypervisor(v, detail=detail, with_servers=bool(with_servers))
                 for v in found]
        body: dict = {"hypervisors": items}
        links = self.next_link(request, "os-hypervisors/detail" if detail else
                               "os-hypervisors", items, limit)
        if links:
            body["hypervisors_links"] = links
        return json_response(body)

    async def hypervisors(self, request: Request) -> Response:
        return await self._hypervisors(request, detail=False)

    async def hypervisors_detail(self, request: Request) -> Response:
        return await self._hypervisors(request, detail=True)

    async def hypervisor(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-hypervisors:show")
        mv = self.mv(request)
        with_servers = flag(self.query(request, "with_servers"), "with_servers") \
            if mv >= "2.53" else False
        found = await self.run(self.c.hosts.hypervisor, request.path_params["hypervisor_id"])
        return json_response({"hypervisor": self.shaper(request, caller).hypervisor(
            found, detail=True, with_servers=bool(with_servers))})

    async def statistics(self, request: Request) -> Response:
        if self.mv(request) >= "2.88":
            raise NotFound("The resource could not be found.")
        await self.enforce(request, "os-hypervisors:statistics")
        nodes = [v.node for v in await self.run(self.c.hosts.hypervisors)]
        total = {key: sum(getattr(n, key) for n in nodes) for key in (
            "vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used",
            "running_vms")}
        total.update(count=len(nodes), current_workload=0,
                     free_ram_mb=total["memory_mb"] - total["memory_mb_used"],
                     free_disk_gb=total["local_gb"] - total["local_gb_used"],
                     disk_available_least=total["local_gb"] - total["local_gb_used"])
        return json_response({"hypervisor_statistics": total})

    async def uptime(self, request: Request) -> Response:
        if self.mv(request) >= "2.88":
            raise NotFound("The resource could not be found.")
        caller = await self.enforce(request, "os-hypervisors:uptime")
        found = await self.run(self.c.hosts.hypervisor, request.path_params["hypervisor_id"])
        body = self.shaper(request, caller).hypervisor(found, detail=False)
        body["uptime"] = found.node.uptime or None
        return json_response({"hypervisor": body})

    async def search(self, request: Request) -> Response:
        return await self._by_pattern(request, servers=False)

    async def servers(self, request: Request) -> Response:
        return await self._by_pattern(request, servers=True)

    async def _by_pattern(self, request: Request, servers: bool) -> Response:
        if self.mv(request) >= "2.53":
            raise NotFound("The resource could not be found.")
        caller = await self.enforce(request, "os-hypervisors:servers" if servers
                                    else "os-hypervisors:search")
        pattern = request.path_params["pattern"]
        found = await self.run(self.c.hosts.hypervisors, pattern=pattern)
        if not found:
            raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
        shaper = self.shaper(request, caller)
        return json_response({"hypervisors": [
            shaper.hypervisor(v, detail=False, with_servers=servers) for v in found]})

    # -- services -----------------------------------------------------------------------

    async def services(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-services:list")
        found = await self.run(self.c.hosts.services, self.query(request, "host"),
                               self.query(request, "binary"))
        shaper = self.shaper(request, caller)
        return json_response({"services": [shaper.service(v) for v in found]})

    async def update_service(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-services:update")
        target = request.path_params["service_id"]
        if self.mv(request) < "2.53":
            return await self._legacy_update(request, target)
        body = await read_json(request, schemas.ServiceUpdateBody)
        if not body.model_fields_set:
            raise BadRequest("No updates were requested. Fields 'status' or 'forced_down' "
                             "should be specified.")
        if body.disabled_reason is not None and body.status != "disabled":
            raise BadRequest("Specifying 'disabled_reason' with status 'enabled' is invalid.")
        disabled = None if body.status is None else body.status == "disabled"
        found = await self.run(self.c.hosts.update_service, target, disabled=disabled,
                               disabled_reason=body.disabled_reason,
                               forced_down=body.forced_down)
        return json_response({"service": self.shaper(request, caller).service(found)})

    async def _legacy_update(self, request: Request, action: str) -> Response:
        if action not in ("enable", "disable", "disable-log-reason", "force-down"):
            raise NotFound("Unknown action")
        if action == "force-down" and self.mv(request) < "2.11":
            raise NotFound("Unknown action")
        body = await read_json(request, schemas.ServiceActionBody)
        if action == "force-down":
            if body.forced_down is None:
                raise BadRequest("Invalid input for field/attribute forced_down.")
            found = await self.run(self.c.hosts.update_service, host=body.host,
                                   binary=body.binary, forced_down=body.forced_down)
            return json_response({"service": {"host": body.host, "binary": body.binary,
                                              "forced_down": found.service.forced_down}})
        if action == "disable-log-reason" and not body.disabled_reason:
            raise BadRequest("Missing disabled reason field")
        disabled = action != "enable"
        found = await self.run(self.c.hosts.update_service, host=body.host,
                               binary=body.binary, disabled=disabled,
                               disabled_reason=body.disabled_reason)
        service = {"host": body.host, "binary": body.binary,
                   "status": "disabled" if found.service.disabled else "enabled"}
        if action == "disable-log-reason":
            service["disabled_reason"] = found.service.disabled_reason
        return json_response({"service": service})

    async def delete_service(self, request: Request) -> Response:
        await self.enforce(request, "os-services:delete")
        await self.run(self.c.hosts.delete_service, request.path_params["service_id"])
        return no_content()

    async def aggregates(self, request: Request) -> Response:
        """Host aggregates are not supported: the list is always empty (the CLI's
        ``hypervisor show`` reads it)."""
        await self.enforce(request, "os-aggregates:index")
        return json_response({"aggregates": []})

    # -- availability zones -------------------------------------------------------------

    async def zones(self, request: Request) -> Response:
        await self.enforce(request, "os-availability-zone:list")
        zones = await self.run(self.c.hosts.zones)
        info = [{"zoneName": name, "zoneState": {"available": any(
            not v.service.disabled for v in views)}, "hosts": None}
            for name, views in sorted(zones.items()) if name != "internal"]
        return json_response({"availabilityZoneInfo": info})

    async def zones_detail(self, request: Request) -> Response:
        await self.enforce(request, "os-availability-zone:detail")
        zones = await self.run(self.c.hosts.zones)
        info = []
        for name, views in sorted(zones.items()):
            hosts: dict = {}
            for view in views:
                svc = view.service
                hosts.setdefault(svc.host, {})[svc.binary] = {
                    "available": view.up and not svc.disabled, "active": not svc.disabled,
                    "updated_at": iso_micro(svc.updated_at)}
            available = name == "internal" or any(not v.service.disabled for v in views)
            info.append({"zoneName": name, "zoneState": {"available": available},
                         "hosts": hosts})
        return json_response({"availabilityZoneInfo": info})


def routes(component) -> list[Route]:
    h = HostHandlers(component)
    hv = "/v2.1/os-hypervisors"
    return [
        Route(hv, h.hypervisors, methods=["GET"]),
        Route(f"{hv}/detail", h.hypervisors_detail, methods=["GET"]),
        Route(f"{hv}/statistics", h.statistics, methods=["GET"]),
        Route(f"{hv}/{{hypervisor_id}}", h.hypervisor, methods=["GET"]),
        Route(f"{hv}/{{hypervisor_id}}/uptime", h.uptime, methods=["GET"]),
        Route(f"{hv}/{{pattern}}/search", h.search, methods=["GET"]),
        Route(f"{hv}/{{pattern}}/servers", h.servers, methods=["GET"]),
        Route("/v2.1/os-services", h.services, methods=["GET"]),
        Route("/v2.1/os-services/{service_id}", h.update_service, methods=["PUT"]),
        Route("/v2.1/os-services/{service_id}", h.delete_service, methods=["DELETE"]),
        Route("/v2.1/os-aggregates", h.aggregates, methods=["GET"]),
        Route("/v2.1/os-availability-zone", h.zones, methods=["GET"]),
        Route("/v2.1/os-availability-zone/detail", h.zones_detail, methods=["GET"]),
    ]
