"""``POST /servers/{id}/action`` and the remote console URL.

The body names one action (``{"os-stop": null}``, ``{"reboot": {"type":
"HARD"}}``...); ``ACTIONS`` maps each name to its handler. Status codes are
Nova's: 202 for what happens on the node, 204 for confirmResize, 200 for
the console calls. An action Nova has and tinystack does not (migrate,
shelve, rescue...) is a 400 saying so; an unknown one is Nova's 400 "There
is no such action". The service side is ``actions.py``; the serial
console's websocket is ``api_console.py``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest, Forbidden
from tinystack.common.http import json_response, read_json
from tinystack.compute import schemas, states
from tinystack.compute.actions import POWER_ACTIONS, RebuildRequest
from tinystack.compute.web import Handlers, accepted, no_content, raw_json

__all__ = ["ActionHandlers", "routes", "UNSUPPORTED"]

UNSUPPORTED = frozenset({
    "migrate", "os-migrateLive", "evacuate", "shelve", "shelveOffload", "unshelve", "rescue",
    "unrescue", "createBackup", "changePassword", "injectNetworkInfo", "resetNetwork",
    "forceDelete", "restore", "trigger_crash_dump", "addFixedIp", "removeFixedIp",
    "addFloatingIp", "removeFloatingIp", "os-getVNCConsole", "os-getSPICEConsole",
    "os-getRDPConsole", "os-getMKSConsole",
})
_POWER_RULES = {"stop": "servers:stop", "start": "servers:start",
                "pause": "os-pause-server:pause", "unpause": "os-pause-server:unpause",
                "suspend": "os-suspend-server:suspend", "resume": "os-suspend-server:resume"}
_CONSOLES = {"serial": ("serial",), "vnc": ("novnc", "xvpvnc"),
             "spice": ("spice-html5", "spice-direct"), "rdp": ("rdp-html5",),
             "mks": ("webmks",)}


def _object(value: Any, action: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input for field/attribute {action}. Value: {value}. "
                         f"{value!r} is not of type 'object'")
    return value


class ActionHandlers(Handlers):
    async def action(self, request: Request) -> Response:
        body = await raw_json(request)
        if len(body) != 1:
            raise BadRequest("Malformed request body")
        name, args = next(iter(body.items()))
        server_id = request.path_params["server_id"]
        if name in ("os-stop", "os-start"):
            name = name[3:]
        if name in POWER_ACTIONS:
            caller = await self.enforce(request, _POWER_RULES[name])
            await self.c.actions.power(caller, server_id, name)
            return accepted()
        handler = self.ACTIONS.get(name)
        if handler is not None:
            return await handler(self, request, server_id, args)
        if name in UNSUPPORTED:
            raise BadRequest(f"The '{name}' action is not supported by this cloud.")
        raise BadRequest(f"There is no such action: {name}")

    # -- each action --------------------------------------------------------------------

    async def reboot(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "servers:reboot")
        kind = str(_object(args, "reboot").get("type", "")).upper()
        if kind not in ("SOFT", "HARD"):
            raise BadRequest(f"Invalid input for field/attribute type. Value: {kind}. "
                             f"'{kind}' is not one of ['SOFT', 'HARD', 'soft', 'hard']")
        await self.c.actions.reboot(caller, server_id, hard=kind == "HARD")
        return accepted()

    async def lock(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "os-lock-server:lock")
        args = _object(args, "lock")
        if args and self.mv(request) < "2.73":
            raise BadRequest("Invalid input for field/attribute lock. Value: "
                             f"{args}. {args!r} is not of type 'null'")
        unknown = set(args) - {"locked_reason"}
        if unknown:
            raise BadRequest("Invalid input for field/attribute lock. Additional properties "
                             f"are not allowed ('{sorted(unknown)[0]}' was unexpected)")
        reason = args.get("locked_reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 255):
            raise BadRequest("Invalid input for field/attribute locked_reason.")
        await self.run(self.c.actions.lock, caller, server_id, reason)
        return accepted()

    async def unlock(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "os-lock-server:unlock")
        await self.run(self.c.actions.unlock, caller, server_id)
        return accepted()

    async def rebuild(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "servers:rebuild")
        mv = self.mv(request)
        try:
            body = schemas.RebuildBody.model_validate({"rebuild": _object(args, "rebuild")})
        except Exception as exc:
            raise BadRequest(f"Invalid input for field/attribute rebuild: {exc}") from None
        part = body.rebuild
        schemas.gate(part, "description", mv >= "2.19")
        schemas.gate(part, "key_name", mv >= "2.54")
        schemas.gate(part, "user_data", mv >= "2.57")
        schemas.gate(part, "hostname", mv >= "2.90")
        schemas.gate(part, "trusted_image_certificates", mv >= "2.63")
        schemas.gate(part, "personality", mv < "2.57")
        schemas.refuse_unknown(part, "rebuild")
        schemas.check_hostname(part.hostname, fqdn=mv >= "2.94")
        fields = part.model_fields_set
        req = RebuildRequest(
            image_ref=part.imageRef.rstrip("/").rsplit("/", 1)[-1], name=part.name,
            metadata=part.metadata, admin_pass=part.adminPass, key_name=part.key_name,
            change_key="key_name" in fields, user_data=part.user_data,
            change_user_data="user_data" in fields, description=part.description,
            change_description="description" in fields, hostname=part.hostname)
        password = await self.c.actions.rebuild(caller, server_id, req)
        record = await self.run(self.c.listing.get, caller, server_id)
        view = self.shaper(request, caller).server(record, full=mv >= "2.75", groups=True)
        view["adminPass"] = password
        return json_response({"server": view}, 202)

    async def resize(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "servers:resize")
        args = _object(args, "resize")
        flavor = args.get("flavorRef")
        if flavor in (None, ""):
            raise BadRequest("Resize requests require 'flavorRef' attribute.")
        await self.c.actions.resize(caller, server_id, str(flavor))
        return accepted()

    async def confirm_resize(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "servers:confirm_resize")
        await self.run(self.c.actions.confirm_resize, caller, server_id)
        return no_content()

    async def revert_resize(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "servers:revert_resize")
        await self.c.actions.revert_resize(caller, server_id)
        return accepted()

    async def create_image(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "servers:create_image")
        args = _object(args, "createImage")
        name = args.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise BadRequest("Invalid input for field/attribute name. Value: "
                             f"{name}. {name!r} is not of type 'string'")
        metadata = args.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise BadRequest("Invalid input for field/attribute metadata.")
        started = await self.c.actions.create_image(caller, server_id, name, metadata)
        if self.mv(request) >= "2.45":
            return json_response({"image_id": started.image_id}, 202)
        return Response(status_code=202, headers={"Location": started.image_url})

    async def console_output(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.enforce(request, "os-console-output")
        length = _object(args, "os-getConsoleOutput").get("length")
        if isinstance(length, str) and length.lstrip("-").isdigit():
            length = int(length)
        if length is not None and (not isinstance(length, int) or length < -1):
            raise BadRequest(f"Invalid input for field/attribute length. Value: {length}.")
        if length == -1:
            length = None
        output = await self.c.actions.console_output(caller, server_id, length)
        return json_response({"output": output})

    async def serial_console_legacy(self, request: Request, server_id: str,
                                    args: Any) -> Response:
        if self.mv(request) >= "2.6":
            raise BadRequest("There is no such action: os-getSerialConsole")
        caller = await self.enforce(request, "os-remote-consoles")
        kind = _object(args, "os-getSerialConsole").get("type")
        if kind != "serial":
            raise BadRequest(f"Invalid input for field/attribute type. Value: {kind}.")
        url = await self._console_url(request, caller, server_id)
        return json_response({"console": {"type": "serial", "url": url}})

    async def security_group(self, request: Request, server_id: str, args: Any,
                             add: bool) -> Response:
        rule = "os-security-groups:add" if add else "os-security-groups:remove"
        caller = await self.enforce(request, rule)
        name = _object(args, "addSecurityGroup" if add else "removeSecurityGroup").get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("Security group name cannot be empty")
        await self.c.actions.change_security_group(caller, server_id, name.strip(), add)
        return accepted()

    async def reset_state(self, request: Request, server_id: str, args: Any) -> Response:
        caller = await self.caller(request)
        if not caller.is_admin:
            raise Forbidden("Policy doesn't allow os_compute_api:os-admin-actions:reset_state "
                            "to be performed.")
        state = _object(args, "os-resetState").get("state")
        if state not in ("active", "error"):
            raise BadRequest(f"Invalid input for field/attribute state. Value: {state}. "
                             f"'{state}' is not one of ['active', 'error']")
        await self.run(self.c.actions.reset_state, caller, server_id,
                       states.ACTIVE if state == "active" else states.ERROR)
        return accepted()

    ACTIONS = {
        "reboot": reboot, "lock": lock, "unlock": unlock, "rebuild": rebuild,
        "resize": resize, "confirmResize": confirm_resize, "revertResize": revert_resize,
        "createImage": create_image, "os-getConsoleOutput": console_output,
        "os-getSerialConsole": serial_console_legacy,
        "addSecurityGroup": lambda self, r, s, a: self.security_group(r, s, a, True),
        "removeSecurityGroup": lambda self, r, s, a: self.security_group(r, s, a, False),
        "os-resetState": reset_state,
    }

    # -- remote consoles ----------------------------------------------------------------

    async def _console_url(self, request: Request, caller, server_id: str) -> str:
        token = await self.run(self.c.actions.new_console_token, caller, server_id)
        base = self.base(request)
        scheme = "wss" if base.startswith("https:") else "ws"
        return f"{scheme}:{base.split(':', 1)[1]}/console/serial?token={token}"

    async def remote_console(self, request: Request) -> Response:
        mv = self.mv(request)
        if mv < "2.6":
            raise BadRequest("The resource could not be found.")
        caller = await self.enforce(request, "os-remote-consoles")
        body = (await read_json(request, schemas.RemoteConsoleBody)).remote_console
        if body.type not in _CONSOLES[body.protocol]:
            raise BadRequest(f"Invalid input for field/attribute type. Value: {body.type}. "
                             f"'{body.type}' is not valid for protocol {body.protocol}")
        if (body.protocol == "mks" and mv < "2.8") or (body.type == "spice-direct"
                                                         and mv < "2.99"):
            raise BadRequest(f"Invalid input for field/attribute protocol. Value: "
                             f"{body.protocol}.")
        if body.protocol != "serial":
            raise BadRequest(f"Unavailable console type {body.type}.")
        url = await self._console_url(request, caller, request.path_params["server_id"])
        return json_response({"remote_console": {"protocol": "serial", "type": "serial",
                                                 "url": url}})


def routes(component) -> list[Route]:
    h = ActionHandlers(component)
    return [
        Route("/v2.1/servers/{server_id}/action", h.action, methods=["POST"]),
        Route("/v2.1/servers/{server_id}/remote-consoles", h.remote_console,
              methods=["POST"]),
    ]
