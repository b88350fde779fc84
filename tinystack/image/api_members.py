"""Routes for ``/v2/images/{image_id}/members``: share an image, accept or reject it.

The rules (who may add, see and answer a membership) are in ``sharing.py``;
here the policy hooks and Glance's request and response shapes. Adding a
member answers 200, not 201, as Glance does.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest
from tinystack.common.http import json_response
from tinystack.common.policy import Credentials
from tinystack.image.models import Image
from tinystack.image.policy import enforce, target
from tinystack.image.views import member_view
from tinystack.image.web import Handlers, no_content

__all__ = ["MemberHandlers", "routes"]


class MemberHandlers(Handlers):
    @property
    def members(self):
        return self.c.members

    @staticmethod
    def _member_rule(creds: Credentials, member_id: str):
        def check(image: Image) -> None:
            enforce("modify_member", creds, target(image.owner, image.visibility, member_id))
        return check

    async def list_members(self, request: Request) -> Response:
        creds = await self.caller(request)
        found = await self.run(self.members.list, creds, request.path_params["image_id"],
                               self.owner_rule("get_members", creds))
        return json_response({"members": [member_view(m) for m in found],
                              "schema": "/v2/schemas/members"})

    async def get_member(self, request: Request) -> Response:
        creds = await self.caller(request)
        member = await self.run(self.members.get, creds, request.path_params["image_id"],
                                request.path_params["member_id"],
                                self.owner_rule("get_member", creds))
        return json_response(member_view(member))

    async def add_member(self, request: Request) -> Response:
        creds = await self.caller(request)
        body = await self.body(request)
        if not isinstance(body, dict) or "member" not in body:
            raise BadRequest("Member to be added not specified")
        member_id = body["member"]
        if not member_id:
            raise BadRequest("Member can't be empty")
        if not isinstance(member_id, str) or len(member_id) > 255:
            raise BadRequest("Member must be a project id of at most 255 characters")
        member = await self.run(self.members.add, creds, request.path_params["image_id"],
                                member_id, self.owner_rule("add_member", creds))
        return json_response(member_view(member))

    async def update_member(self, request: Request) -> Response:
        creds = await self.caller(request)
        body = await self.body(request)
        if not isinstance(body, dict) or "status" not in body:
            raise BadRequest("Status not specified")
        member_id = request.path_params["member_id"]
        member = await self.run(self.members.update, creds, request.path_params["image_id"],
                                member_id, body["status"], self._member_rule(creds, member_id))
        return json_response(member_view(member))

    async def delete_member(self, request: Request) -> Response:
        creds = await self.caller(request)
        await self.run(self.members.remove, creds, request.path_params["image_id"],
                       request.path_params["member_id"],
                       self.owner_rule("delete_member", creds))
        return no_content()


def routes(component) -> list[Route]:
    h = MemberHandlers(component)
    members = "/v2/images/{image_id}/members"
    return [
        Route(members, h.list_members, methods=["GET"]),
        Route(members, h.add_member, methods=["POST"]),
        Route(f"{members}/{{member_id}}", h.get_member, methods=["GET"]),
        Route(f"{members}/{{member_id}}", h.update_member, methods=["PUT"]),
        Route(f"{members}/{{member_id}}", h.delete_member, methods=["DELETE"]),
    ]
