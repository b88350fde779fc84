"""Routes for what a project or user owns besides servers: key pairs, limits,
quota sets and quota classes, server groups.

Key pairs are per user (admins reach another user's with ``user_id``,
2.10); quotas and groups per project. The service side is ``keypairs.py``,
``quotas.py`` and ``groups.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest
from tinystack.common.http import json_response, read_json
from tinystack.compute import quotas as quota_rules
from tinystack.compute import schemas
from tinystack.compute.web import Handlers, accepted, flag, int_param, no_content

__all__ = ["ProjectHandlers", "routes"]

_CLASS_NETWORK = ("fixed_ips", "floating_ips", "security_groups", "security_group_rules")


def _class_keys(mv) -> list[str]:
    keys = quota_rules.visible(mv)
    if mv < "2.50":
        keys = [k for k in keys if k not in ("server_groups", "server_group_members")]
        keys += [k for k in _CLASS_NETWORK if k not in keys]
    else:
        keys = [k for k in keys if k not in _CLASS_NETWORK]
    return keys


class ProjectHandlers(Handlers):
    # -- key pairs ----------------------------------------------------------------------

    async def _user(self, request: Request, rule: str, explicit: str | None = None) -> tuple:
        caller = await self.caller(request)
        wanted = explicit or (self.query(request, "user_id") if self.mv(request) >= "2.10"
                              else None)
        user_id = wanted or caller.user_id
        await self.enforce(request, rule, user_id=user_id)
        return caller, user_id

    async def keypairs(self, request: Request) -> Response:
        caller, user_id = await self._user(request, "os-keypairs:index")
        limit = marker = None
        if self.mv(request) >= "2.35":
            limit = int_param(self.query(request, "limit"), "limit")
            marker = self.query(request, "marker")
        found = await self.run(self.c.keypairs.list, user_id, limit=limit, marker=marker)
        shaper = self.shaper(request, caller)
        body: dict = {"keypairs": [shaper.keypair_brief(k) for k in found]}
        links = self.next_link(request, "os-keypairs", [{"name": k.name} for k in found],
                               limit, "name")
        if links:
            body["keypairs_links"] = links
        return json_response(body)

    async def create_keypair(self, request: Request) -> Response:
        mv = self.mv(request)
        body = (await read_json(request, schemas.KeyPairBody)).keypair
        schemas.gate(body, "type", mv >= "2.2")
        schemas.gate(body, "user_id", mv >= "2.10")
        schemas.refuse_unknown(body, "keypair")
        if mv >= "2.92" and body.public_key is None:
            raise BadRequest("Invalid input for field/attribute keypair. 'public_key' is a "
                             "required property")
        caller, user_id = await self._user(request, "os-keypairs:create", body.user_id)
        created = await self.run(self.c.keypairs.create, user_id, caller.project_id,
                                 body.name, public_key=body.public_key, key_type=body.type,
                                 allow_at_and_dot=mv >= "2.92")
        view = self.shaper(request, caller).keypair_created(created.keypair,
                                                            created.private_key)
        return json_response({"keypair": view}, 201 if mv >= "2.2" else 200)

    async def keypair(self, request: Request) -> Response:
        caller, user_id = await self._user(request, "os-keypairs:show")
        found = await self.run(self.c.keypairs.get, user_id, request.path_params["name"])
        return json_response({"keypair": self.shaper(request, caller).keypair(found)})

    async def delete_keypair(self, request: Request) -> Response:
        _, user_id = await self._user(request, "os-keypairs:delete")
        await self.run(self.c.keypairs.delete, user_id, request.path_params["name"])
        return no_content() if self.mv(request) >= "2.2" else accepted()

    # -- limits -------------------------------------------------------------------------

    async def limits(self, request: Request) -> Response:
        caller = await self.enforce(request, "limits")
        project_id = self.query(request, "tenant_id") or caller.project_id
        if project_id != caller.project_id:
            await self.enforce(request, "limits:other_project")
        limits, used = await self.run(self.c.quotas.limits_and_usage, project_id)
        mv = self.mv(request)
        absolute = {
            "maxServerMeta": limits["metadata_items"], "maxTotalInstances": limits["instances"],
            "maxTotalKeypairs": limits["key_pairs"], "maxServerGroups": limits["server_groups"],
            "maxServerGroupMembers": limits["server_group_members"],
            "maxTotalCores": limits["cores"], "maxTotalRAMSize": limits["ram"],
            "totalRAMUsed": used["ram"], "totalCoresUsed": used["cores"],
            "totalInstancesUsed": used["instances"],
            "totalServerGroupsUsed": used["server_groups"],
        }
        if mv < "2.57":
            absolute["maxPersonality"] = limits["injected_files"]
            absolute["maxPersonalitySize"] = limits["injected_file_content_bytes"]
        if mv < "2.39":
            absolute["maxImageMeta"] = limits["metadata_items"]
        if mv < "2.36":
            absolute.update(maxSecurityGroups=limits["security_groups"],
                            maxSecurityGroupRules=limits["security_group_rules"],
                            maxTotalFloatingIps=limits["floating_ips"],
                            totalFloatingIpsUsed=0, totalSecurityGroupsUsed=0)
        return json_response({"limits": {"rate": [], "absolute": absolute}})

    # -- quota sets ---------------------------------------------------------------------

    async def quota_set(self, request: Request) -> Response:
        project_id = request.path_params["project_id"]
        await self.enforce(request, "os-quota-sets:show", project_id=project_id)
        limits, _ = await self.run(self.c.quotas.limits_and_usage, project_id)
        keys = quota_rules.visible(self.mv(request))
        return json_response({"quota_set": {"id": project_id,
                                            **{k: limits[k] for k in keys}}})

    async def quota_detail(self, request: Request) -> Response:
        project_id = request.path_params["project_id"]
        await self.enforce(request, "os-quota-sets:detail", project_id=project_id)
        limits, used = await self.run(self.c.quotas.limits_and_usage, project_id)
        keys = quota_rules.visible(self.mv(request))
        return json_response({"quota_set": {"id": project_id, **{
            k: {"in_use": used.get(k, 0), "limit": limits[k], "reserved": 0} for k in keys}}})

    async def quota_defaults(self, request: Request) -> Response:
        await self.enforce(request, "os-quota-sets:defaults")
        project_id = request.path_params["project_id"]
        limits, _ = await self.run(self.c.quotas.limits_and_usage, None)
        keys = quota_rules.visible(self.mv(request))
        return json_response({"quota_set": {"id": project_id,
                                            **{k: limits[k] for k in keys}}})

    def _quota_changes(self, raw: dict, keys: list[str]) -> dict[str, int]:
        changes = {}
        for key, value in raw.items():
            if key == "force":
                continue
            if key not in keys:
                raise BadRequest(f"Invalid input for field/attribute quota_set. Additional "
                                 f"properties are not allowed ('{key}' was unexpected)")
            if isinstance(value, str) and value.lstrip("-").isdigit():
                value = int(value)
            changes[key] = value
        return changes

    async def update_quota_set(self, request: Request) -> Response:
        await self.enforce(request, "os-quota-sets:update")
        project_id = request.path_params["project_id"]
        raw = (await read_json(request, schemas.QuotaSetBody)).quota_set
        keys = quota_rules.visible(self.mv(request))
        force = bool(flag(str(raw.get("force", "false")), "force"))
        limits = await self.run(self.c.quotas.set_project, project_id,
                                self._quota_changes(raw, keys), force=force)
        return json_response({"quota_set": {k: limits[k] for k in keys}})

    async def delete_quota_set(self, request: Request) -> Response:
        await self.enforce(request, "os-quota-sets:delete")
        await self.run(self.c.quotas.revert_project, request.path_params["project_id"])
        return accepted()

    async def quota_class(self, request: Request) -> Response:
        await self.enforce(request, "os-quota-class-sets:show")
        name = request.path_params["class_name"]
        limits = await self.run(self.c.quotas.class_set, name)
        keys = _class_keys(self.mv(request))
        return json_response({"quota_class_set": {"id": name, **{k: limits[k] for k in keys}}})

    async def update_quota_class(self, request: Request) -> Response:
        await self.enforce(request, "os-quota-class-sets:update")
        name = request.path_params["class_name"]
        raw = (await read_json(request, schemas.QuotaClassBody)).quota_class_set
        keys = _class_keys(self.mv(request))
        limits = await self.run(self.c.quotas.set_class, name,
                                self._quota_changes(raw, keys))
        return json_response({"quota_class_set": {k: limits[k] for k in keys}})

    # -- server groups ------------------------------------------------------------------

    async def server_groups(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-server-groups:index")
        all_projects = bool(flag(self.query(request, "all_projects"), "all_projects"))
        if all_projects and not caller.is_admin:
            all_projects = False
        found = await self.run(self.c.groups.list, caller, all_projects=all_projects,
                               limit=int_param(self.query(request, "limit"), "limit", 1),
                               offset=int_param(self.query(request, "offset"), "offset") or 0)
        shaper = self.shaper(request, caller)
        return json_response({"server_groups": [shaper.server_group(g) for g in found]})

    async def create_server_group(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-server-groups:create")
        mv = self.mv(request)
        body = (await read_json(request, schemas.ServerGroupBody)).server_group
        schemas.gate(body, "policies", mv < "2.64")
        schemas.gate(body, "policy", mv >= "2.64")
        schemas.gate(body, "rules", mv >= "2.64")
        schemas.refuse_unknown(body, "server_group")
        if mv < "2.64":
            if not body.policies or len(body.policies) != 1:
                raise BadRequest("Invalid input for field/attribute policies. 'policies' must "
                                 "hold exactly one policy")
            policy = body.policies[0]
        else:
            if body.policy is None:
                raise BadRequest("Invalid input for field/attribute server_group. 'policy' is "
                                 "a required property")
            policy = body.policy
        created = await self.run(self.c.groups.create, caller, body.name, policy,
                                 body.rules or {}, soft_allowed=mv >= "2.15")
        return json_response({"server_group": self.shaper(request, caller)
                              .server_group(created)})

    async def server_group(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-server-groups:show")
        found = await self.run(self.c.groups.get, caller, request.path_params["group_id"])
        return json_response({"server_group": self.shaper(request, caller)
                              .server_group(found)})

    async def delete_server_group(self, request: Request) -> Response:
        caller = await self.enforce(request, "os-server-groups:delete")
        await self.run(self.c.groups.delete, caller, request.path_params["group_id"])
        return no_content()


def routes(component) -> list[Route]:
    h = ProjectHandlers(component)
    return [
        Route("/v2.1/os-keypairs", h.keypairs, methods=["GET"]),
        Route("/v2.1/os-keypairs", h.create_keypair, methods=["POST"]),
        Route("/v2.1/os-keypairs/{name}", h.keypair, methods=["GET"]),
        Route("/v2.1/os-keypairs/{name}", h.delete_keypair, methods=["DELETE"]),
        Route("/v2.1/limits", h.limits, methods=["GET"]),
        Route("/v2.1/os-quota-sets/{project_id}", h.quota_set, methods=["GET"]),
        Route("/v2.1/os-quota-sets/{project_id}", h.update_quota_set, methods=["PUT"]),
        Route("/v2.1/os-quota-sets/{project_id}", h.delete_quota_set, methods=["DELETE"]),
        Route("/v2.1/os-quota-sets/{project_id}/detail", h.quota_detail, methods=["GET"]),
        Route("/v2.1/os-quota-sets/{project_id}/defaults", h.quota_defaults,
              methods=["GET"]),
        Route("/v2.1/os-quota-class-sets/{class_name}", h.quota_class, methods=["GET"]),
        Route("/v2.1/os-quota-class-sets/{class_name}", h.update_quota_class,
              methods=["PUT"]),
        Route("/v2.1/os-server-groups", h.server_groups, methods=["GET"]),
        Route("/v2.1/os-server-groups", h.create_server_group, methods=["POST"]),
        Route("/v2.1/os-server-groups/{group_id}", h.server_group, methods=["GET"]),
        Route("/v2.1/os-server-groups/{group_id}", h.delete_server_group,
              methods=["DELETE"]),
    ]
