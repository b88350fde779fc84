"""Routes for servers themselves: create, list, show, update, delete, addresses,
metadata, tags and instance actions.

Each handler checks policy, parses the body (``schemas.py``) and the query,
refuses what the request's microversion does not have, calls the service
(``servers.py`` to create and delete, ``listing.py`` for the rest) and
renders with ``views.Shaper``. Actions on a server (``POST .../action``)
are in ``api_actions.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest, Forbidden, NotFound
from tinystack.common.http import json_response, read_json
from tinystack.compute import schemas, states
from tinystack.compute.listing import ListFilters
from tinystack.compute.servers import CreateRequest
from tinystack.compute.web import Handlers, flag, int_param, no_content, parse_time

__all__ = ["ServerHandlers", "routes", "MAX_LIMIT"]

MAX_LIMIT = 1000
_QUERY_KEYS = {
    "all_tenants", "project_id", "tenant_id", "user_id", "name", "status", "image", "flavor",
    "host", "node", "ip", "ip6", "availability_zone", "key_name", "config_drive", "locked",
    "reservation_id", "uuid", "vm_state", "task_state", "power_state", "progress",
    "hostname", "description", "changes-since", "changes-before", "launched_at",
    "terminated_at", "created_at", "deleted", "tags", "tags-any", "not-tags", "not-tags-any",
    "sort_key", "sort_dir", "limit", "marker", "soft_deleted", "access_ip_v4", "access_ip_v6",
    "launch_index", "kernel_id", "ramdisk_id", "root_device_name", "display_name",
    "display_description", "auto_disk_config", "locked_by", "pinned_availability_zone",
}
_ADMIN_FILTERS = {"host", "node", "uuid", "deleted", "hostname", "project_id", "tenant_id",
                  "all_tenants", "description", "soft_deleted"}
_FILTERS_283 = {"availability_zone", "config_drive", "key_name", "created_at", "launched_at",
                "terminated_at", "power_state", "task_state", "vm_state", "progress",
                "user_id"}


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [t for t in value.split(",") if t]


class ServerHandlers(Handlers):
    # -- list and show ------------------------------------------------------------------

    def _filters(self, request: Request, is_admin: bool) -> ListFilters:
        mv = self.mv(request)
        params = request.query_params
        unknown = set(params) - _QUERY_KEYS
        if unknown and mv >= "2.75":
            raise BadRequest(f"Invalid input for query parameters {sorted(unknown)[0]}. "
                             "Additional properties are not allowed")
        allowed = set(_QUERY_KEYS)
        if not is_admin:
            allowed -= _ADMIN_FILTERS
            if mv < "2.83":
                allowed -= _FILTERS_283
        get = {k: params.get(k) if k in allowed else None for k in _QUERY_KEYS}
        status = get["status"]
        if status is not None and status.upper() not in states.STATUSES and mv >= "2.38":
            raise BadRequest("Invalid status value")
        limit = int_param(get["limit"], "limit")
        power = get["power_state"]
        f = ListFilters(
            all_tenants=bool(flag(get["all_tenants"], "all_tenants")) if get["all_tenants"]
            is not None else False,
            project_id=get["project_id"] or get["tenant_id"], user_id=get["user_id"],
            name=get["name"] or get["display_name"], status=status, image=get["image"],
            flavor=get["flavor"], host=get["host"], node=get["node"], ip=get["ip"],
            ip6=get["ip6"] if mv >= "2.5" or is_admin else None,
            availability_zone=get["availability_zone"], key_name=get["key_name"],
            config_drive=flag(get["config_drive"], "config_drive"),
            reservation_id=get["reservation_id"], uuid=get["uuid"], vm_state=get["vm_state"],
            task_state=get["task_state"],
            power_state=int_param(power, "power_state") if power and power.isdigit() else None,
            progress=int_param(get["progress"], "progress"), hostname=get["hostname"],
            description=get["description"],
            changes_since=parse_time(get["changes-since"], "changes-since"),
            launched_at=parse_time(get["launched_at"], "launched_at"),
            terminated_at=parse_time(get["terminated_at"], "terminated_at"),
            created_at=parse_time(get["created_at"], "created_at"),
            deleted=flag(get["deleted"], "deleted"),
            limit=min(limit, MAX_LIMIT) if limit is not None else MAX_LIMIT,
            marker=get["marker"])
        if mv >= "2.66":
            f.changes_before = parse_time(get["changes-before"], "changes-before")
            if f.changes_since and f.changes_before and f.changes_since > f.changes_before:
                raise BadRequest("The value of changes-since must be less than or equal to "
                                 "changes-before.")
        if mv >= "2.26":
            f.tags, f.tags_any = _split(get["tags"]), _split(get["tags-any"])
            f.not_tags, f.not_tags_any = _split(get["not-tags"]), _split(get["not-tags-any"])
        if mv >= "2.73":
            f.locked = flag(get["locked"], "locked")
        if f.all_tenants and not is_admin:
            f.all_tenants = False
        sort_keys = params.getlist("sort_key")
        if sort_keys:
            f.sort_keys = sort_keys
            f.sort_dirs = params.getlist("sort_dir") or ["desc"] * len(sort_keys)
        return f

    async def _list(self, request: Request, detail: bool) -> Response:
        rule = "servers:detail" if detail else "servers:index"
        caller = await self.enforce(request, rule)
        filters = self._filters(request, caller.is_admin)
        if filters.all_tenants or (filters.project_id and caller.is_admin):
            await self.enforce(request, f"{rule}:get_all_tenants")
        records = await self.run(self.c.listing.list, caller, filters)
        shaper = self.shaper(request, caller)
        items = [shaper.server(r) if detail else shaper.server_brief(r) for r in records]
        body: dict = {"servers": items}
        links = self.next_link(request, "servers/detail" if detail else "servers", items,
                               int_param(self.query(request, "limit"), "limit"))
        if links:
            body["servers_links"] = links
        return json_response(body)

    async def index(self, request: Request) -> Response:
        return await self._list(request, detail=False)

    async def detail(self, request: Request) -> Response:
        return await self._list(request, detail=True)

    async def show(self, request: Request) -> Response:
        caller = await self.enforce(request, "servers:show")
        record = await self.run(self.c.listing.get, caller, request.path_params["server_id"])
        return json_response({"server": self.shaper(request, caller).server(record,
                                                                            groups=True)})

    # -- create -------------------------------------------------------------------------

    def _create_request(self, request: Request, body: schemas.ServerCreateBody,
                        is_admin: bool) -> CreateRequest:
        mv, server = self.mv(request), body.server
        schemas.gate(server, "description", mv >= "2.19")
        schemas.gate(server, "tags", mv >= "2.52")
        schemas.gate(server, "hostname", mv >= "2.90")
        schemas.gate(server, "host", mv >= "2.74")
        schemas.gate(server, "hypervisor_hostname", mv >= "2.74")
        schemas.gate(server, "trusted_image_certificates", mv >= "2.63")
        schemas.gate(server, "personality", mv < "2.57")
        extra = set(server.model_extra or {}) - {"block_device_mapping"}
        if extra:
            schemas.gate(server, sorted(extra)[0], False)
        if (server.model_extra or {}).get("block_device_mapping"):
            raise BadRequest("block_device_mapping (v1) is not supported; use "
                             "block_device_mapping_v2.")
        if mv >= "2.37" and "networks" not in server.model_fields_set:
            raise BadRequest("Invalid input for field/attribute server. Value: "
                             f"{server.model_dump(exclude_unset=True)}. 'networks' is a "
                             "required property")
        if mv < "2.37" and isinstance(server.networks, str):
            raise BadRequest(f"Invalid input for field/attribute networks. Value: "
                             f"{server.networks}. '{server.networks}' is not of type 'array'")
        schemas.check_hostname(server.hostname, fqdn=mv >= "2.94")
        if (server.host or server.hypervisor_hostname) and not is_admin:
            raise Forbidden("Policy doesn't allow os_compute_api:servers:create:"
                            "requested_destination to be performed.")
        if len(server.tags) > 50:
            raise BadRequest("The number of tags exceeded the per-server limit 50")
        hints = body.scheduler_hints or body.scheduler_hints_legacy
        return CreateRequest(
            name=server.name, flavor_ref=server.flavorRef, image_ref=server.imageRef,
            networks=server.networks, key_name=server.key_name, user_data=server.user_data,
            metadata=dict(server.metadata),
            security_groups=[g.name for g in server.security_groups],
            availability_zone=server.availability_zone, min_count=server.min_count,
            max_count=server.max_count or server.min_count,
            block_devices=list(server.block_device_mapping_v2),
            config_drive=server.config_drive, description=server.description,
            tags=list(server.tags), hostname=server.hostname, host=server.host,
            hypervisor_hostname=server.hypervisor_hostname, scheduler_hints=dict(hints),
            admin_pass=server.adminPass, access_ipv4=server.accessIPv4,
            access_ipv6=server.accessIPv6, disk_config=server.disk_config)

    async def create(self, request: Request) -> Response:
        caller = await self.enforce(request, "servers:create")
        body = await read_json(request, schemas.ServerCreateBody)
        req = self._create_request(request, body, caller.is_admin)
        created = await self.c.servers.create(caller, req)
        if body.server.return_reservation_id:
            return json_response({"reservation_id": created.reservation_id}, 202)
        shaper = self.shaper(request, caller)
        server_id = created.server_ids[0]
        links = shaper.links("servers", server_id)
        return json_response({"server": {
            "id": server_id, "links": links, "OS-DCF:diskConfig": created.disk_config,
            "security_groups": [{"name": n} for n in created.security_groups],
            "adminPass": created.admin_pass}}, 202, headers={"Location": links[0]["href"]})

    # -- update and delete --------------------------------------------------------------

    async def update(self, request: Request) -> Response:
        caller = await self.enforce(request, "servers:update")
        mv = self.mv(request)
        body = (await read_json(request, schemas.ServerUpdateBody)).server
        schemas.gate(body, "description", mv >= "2.19")
        schemas.gate(body, "hostname", mv >= "2.90")
        schemas.refuse_unknown(body, "server")
        schemas.check_hostname(body.hostname, fqdn=mv >= "2.94")
        names = {"name": "name", "description": "description", "hostname": "hostname",
                 "accessIPv4": "access_ipv4", "accessIPv6": "access_ipv6",
                 "disk_config": "disk_config"}
        changes = {column: getattr(body, field) for field, column in names.items()
                   if field in body.model_fields_set}
        if "name" in changes and changes["name"] is None:
            raise BadRequest("Invalid input for field/attribute name. Value: None. None is "
                             "not of type 'string'")
        if changes.get("disk_config", "") is None:
            del changes["disk_config"]
        record = await self.run(self.c.listing.update, caller,
                                request.path_params["server_id"], changes)
        shaper = self.shaper(request, caller)
        return json_response({"server": shaper.server(record, full=mv >= "2.75",
                                                      groups=True)})

    async def delete(self, request: Request) -> Response:
        caller = await self.enforce(request, "servers:delete")
        await self.c.servers.delete(caller, request.path_params["server_id"])
        return no_content()

    # -- addresses ----------------------------------------------------------------------

    async def ips(self, request: Request) -> Response:
        caller = await self.enforce(request, "ips:index")
        record = await self.run(self.c.listing.get, caller, request.path_params["server_id"])
        return json_response({"addresses": self.shaper(request, caller).addresses(record)})

    async def ips_of_network(self, request: Request) -> Response:
        caller = await self.enforce(request, "ips:show")
        record = await self.run(self.c.listing.get, caller, request.path_params["server_id"])
        network = request.path_params["network"]
        addresses = self.shaper(request, caller).addresses(record)
        if network not in addresses:
            raise NotFound("Instance is not a member of specified network")
        return json_response({network: addresses[network]})

    # -- metadata -----------------------------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        caller = await self.enforce(request, "server-metadata:index")
        found = await self.run(self.c.listing.metadata, caller,
                               request.path_params["server_id"])
        return json_response({"metadata": found})

    async def _set_metadata(self, request: Request, replace: bool) -> Response:
        rule = "server-metadata:update_all" if replace else "server-metadata:create"
        caller = await self.enforce(request, rule)
        body = await read_json(request, schemas.MetadataBody)
        found = await self.run(self.c.listing.set_metadata, caller,
                               request.path_params["server_id"], body.metadata, replace=replace)
        return json_response({"metadata": found})

    async def replace_metadata(self, request: Request) -> Response:
        return await self._set_metadata(request, replace=True)

    async def merge_metadata(self, request: Request) -> Response:
        return await self._set_metadata(request, replace=False)

    async def metadata_item(self, request: Request) -> Response:
        caller = await self.enforce(request, "server-metadata:show")
        key = request.path_params["key"]
        value = await self.run(self.c.listing.metadata_item, caller,
                               request.path_params["server_id"], key)
        return json_response({"meta": {key: value}})

    async def set_metadata_item(self, request: Request) -> Response:
        caller = await self.enforce(request, "server-metadata:update")
        body = await read_json(request, schemas.MetaItemBody)
        key = request.path_params["key"]
        if len(body.meta) > 1:
            raise BadRequest("Request body contains too many items")
        if key not in body.meta:
            raise BadRequest("Request body and URI mismatch")
        await self.run(self.c.listing.set_metadata, caller, request.path_params["server_id"],
                       {key: body.meta[key]}, replace=False)
        return json_response({"meta": {key: body.meta[key]}})

    async def delete_metadata_item(self, request: Request) -> Response:
        caller = await self.enforce(request, "server-metadata:delete")
        await self.run(self.c.listing.delete_metadata_item, caller,
                       request.path_params["server_id"], request.path_params["key"])
        return no_content()

    # -- tags ---------------------------------------------------------------------------

    def _tags_supported(self, request: Request) -> None:
        if self.mv(request) < "2.26":
            raise NotFound("The resource could not be found.")

    @staticmethod
    def _check_tag(tag: str) -> None:
        if not 1 <= len(tag) <= 60 or "," in tag or "/" in tag:
            raise BadRequest(f"Tag '{tag}' is invalid. It must be 1 to 60 characters long "
                             "and contain neither ',' nor '/'.")

    async def tags(self, request: Request) -> Response:
        self._tags_supported(request)
        caller = await self.enforce(request, "os-server-tags:index")
        found = await self.run(self.c.listing.tags, caller, request.path_params["server_id"])
        return json_response({"tags": found})

    async def replace_tags(self, request: Request) -> Response:
        self._tags_supported(request)
        caller = await self.enforce(request, "os-server-tags:update_all")
        body = await read_json(request, schemas.TagsBody)
        for tag in body.tags:
            self._check_tag(tag)
        found = await self.run(self.c.listing.replace_tags, caller,
                               request.path_params["server_id"], body.tags)
        return json_response({"tags": found})

    async def delete_tags(self, request: Request) -> Response:
        self._tags_supported(request)
        caller = await self.enforce(request, "os-server-tags:delete_all")
        await self.run(self.c.listing.delete_tag, caller, request.path_params["server_id"],
                       None)
        return no_content()

    async def check_tag(self, request: Request) -> Response:
        self._tags_supported(request)
        caller = await self.enforce(request, "os-server-tags:show")
        await self.run(self.c.listing.has_tag, caller, request.path_params["server_id"],
                       request.path_params["tag"])
        return no_content()

    async def add_tag(self, request: Request) -> Response:
        self._tags_supported(request)
        caller = await self.enforce(request, "os-server-tags:update")
        server_id, tag = request.path_params["server_id"], request.path_params["tag"]
        self._check_tag(tag)
        created = await self.run(self.c.listing.add_tag, caller, server_id, tag)
        if not created:
            return no_content()
        location = f"{self.base(request)}/v2.1/servers/{server_id}/tags/{tag}"
        return Response(status_code=201, headers={"Location": location})

    async def delete_tag(self, request: Request) -> Response:
        self._tags_supported(request)
        caller = await self.enforce(request, "os-server-tags:delete")
        await self.run(self.c.listing.delete_tag, caller, request.path_params["server_id"],
                       request.path_params["tag"])
        return no_content()

    # -- instance actions ---------------------------------------------------------------

    async def instance_actions(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-instance-actions:list")
        mv = self.mv(request)
        limit = marker = since = before = None
        if mv >= "2.58":
            limit = int_param(self.query(request, "limit"), "limit")
            marker = self.query(request, "marker")
            since = parse_time(self.query(request, "changes-since"), "changes-since")
        if mv >= "2.66":
            before = parse_time(self.query(request, "changes-before"), "changes-before")
        found = await self.run(self.c.listing.actions, caller,
                               request.path_params["server_id"], deleted_ok=mv >= "2.21",
                               limit=limit, marker=marker, changes_since=since,
                               changes_before=before)
        shaper = self.shaper(request, caller)
        items = [shaper.action(a) for a in found]
        body: dict = {"instanceActions": items}
        links = self.next_link(request, f"servers/{request.path_params['server_id']}"
                               "/os-instance-actions", items, limit, "request_id")
        if links:
            body["links"] = links
        return json_response(body)

    async def instance_action(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-instance-actions:show")
        mv = self.mv(request)
        action, events, _ = await self.run(
            self.c.listing.action, caller, request.path_params["server_id"],
            request.path_params["request_id"], deleted_ok=mv >= "2.21")
        show_events = await self.allowed(request, "os-instance-actions:events")
        shaper = self.shaper(request, caller)
        return json_response({"instanceAction": shaper.action_detail(
            action, events, action.project_id, None, show_events)})


def routes(component) -> list[Route]:
    h = ServerHandlers(component)
    v = "/v2.1/servers"
    one = f"{v}/{{server_id}}"
    return [
        Route(v, h.index, methods=["GET"]),
        Route(v, h.create, methods=["POST"]),
        Route(f"{v}/detail", h.detail, methods=["GET"]),
        Route(one, h.show, methods=["GET"]),
        Route(one, h.update, methods=["PUT"]),
        Route(one, h.delete, methods=["DELETE"]),
        Route(f"{one}/ips", h.ips, methods=["GET"]),
        Route(f"{one}/ips/{{network}}", h.ips_of_network, methods=["GET"]),
        Route(f"{one}/metadata", h.metadata, methods=["GET"]),
        Route(f"{one}/metadata", h.replace_metadata, methods=["PUT"]),
        Route(f"{one}/metadata", h.merge_metadata, methods=["POST"]),
        Route(f"{one}/metadata/{{key}}", h.metadata_item, methods=["GET"]),
        Route(f"{one}/metadata/{{key}}", h.set_metadata_item, methods=["PUT"]),
        Route(f"{one}/metadata/{{key}}", h.delete_metadata_item, methods=["DELETE"]),
        Route(f"{one}/tags", h.tags, methods=["GET"]),
        Route(f"{one}/tags", h.replace_tags, methods=["PUT"]),
        Route(f"{one}/tags", h.delete_tags, methods=["DELETE"]),
        Route(f"{one}/tags/{{tag}}", h.check_tag, methods=["GET"]),
        Route(f"{one}/tags/{{tag}}", h.add_tag, methods=["PUT"]),
        Route(f"{one}/tags/{{tag}}", h.delete_tag, methods=["DELETE"]),
        Route(f"{one}/os-instance-actions", h.instance_actions, methods=["GET"]),
        Route(f"{one}/os-instance-actions/{{request_id}}", h.instance_action,
              methods=["GET"]),
    ]
