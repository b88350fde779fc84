"""The ``/v3/auth`` routes: issue, validate, check and revoke tokens, and what a
token may reach (``/v3/auth/projects``, ``domains``, ``system``, ``catalog``).

The validation route is the hottest path of the cloud: a cached token is
answered without a thread hop or a query. Also here: the version documents
at ``/identity`` and ``/identity/v3``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import BadRequest, Forbidden, NotFound
from tinystack.common.http import json_response, parse_json
from tinystack.identity.web import Handlers, no_content

__all__ = ["AuthHandlers", "routes", "VERSION"]

VERSION = "v3.14"
UPDATED = "2020-04-07T00:00:00Z"
MEDIA = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]


class AuthHandlers(Handlers):
    def _version(self, request: Request) -> dict:
        return {"id": VERSION, "status": "stable", "updated": UPDATED,
                "links": [{"rel": "self", "href": self.base(request) + "/"}],
                "media-types": MEDIA}

    async def versions(self, request: Request) -> Response:
        return json_response({"versions": {"values": [self._version(request)]}}, 300)

    async def version(self, request: Request) -> Response:
        return json_response({"version": self._version(request)})

    async def issue(self, request: Request) -> Response:
        raw = await request.body()
        body = parse_json(raw) if raw else None
        if not isinstance(body, dict) or not isinstance(body.get("auth"), dict):
            raise BadRequest("Invalid input for field 'auth': 'auth' is a required property")
        token_id, valid = await self.run(self.auth.authenticate, body["auth"])
        with_catalog = "nocatalog" not in request.query_params
        return json_response(self.auth.render(valid, with_catalog), 201,
                             {"X-Subject-Token": token_id})

    async def _subject(self, request: Request, action: str):
        caller = await self.caller(request)
        subject_id = request.headers.get("x-subject-token")
        if not subject_id:
            raise NotFound("Could not find token: the X-Subject-Token header is missing.")
        allow_expired = "allow_expired" in request.query_params and \
            request.query_params["allow_expired"].lower() in ("1", "true", "")
        if subject_id == caller.token_id:
            subject = caller
        else:
            subject = self.auth.cached(subject_id, allow_expired) or \
                await self.run(self.auth.validate, subject_id, allow_expired)
        self.enforce_on(caller, action, token_user_id=subject.payload.user_id)
        return subject

    def enforce_on(self, caller, action, **target) -> None:
        if not self.allowed(caller, action, **target):
            raise Forbidden(f"You are not authorized to perform the requested action: {action}.")

    async def validate(self, request: Request) -> Response:
        subject = await self._subject(request, "identity:validate_token")
        with_catalog = "nocatalog" not in request.query_params
        return json_response(self.auth.render(subject, with_catalog), 200,
                             {"X-Subject-Token": subject.token_id})

    async def check(self, request: Request) -> Response:
        subject = await self._subject(request, "identity:check_token")
        return Response(status_code=200, headers={"X-Subject-Token": subject.token_id})

    async def revoke(self, request: Request) -> Response:
        subject = await self._subject(request, "identity:revoke_token")
        await self.run(self.auth.revoke, subject)
        return no_content()

    async def projects(self, request: Request) -> Response:
        caller = await self.caller(request)
        projects, _, _ = await self.run(self.identity.user_targets, caller.payload.user_id)
        return self.collection(request, "projects", [
            self.c.views.project(request, p) for p in projects])

    async def domains(self, request: Request) -> Response:
        caller = await self.caller(request)
        _, domains, _ = await self.run(self.identity.user_targets, caller.payload.user_id)
        return self.collection(request, "domains", [
            self.c.views.domain(request, d) for d in domains])

    async def system(self, request: Request) -> Response:
        caller = await self.caller(request)
        _, _, system = await self.run(self.identity.user_targets, caller.payload.user_id)
        return self.collection(request, "system", [{"all": True}] if system else [])

    async def catalog(self, request: Request) -> Response:
        caller = await self.caller(request)
        p = caller.payload
        if not (p.project_id or p.domain_id or p.system):
            raise Forbidden("A scoped token is required to read the catalog.")
        entries = await self.run(self.c.catalog.catalog)
        return json_response({"catalog": entries, "links": {"self": str(request.url),
                                                            "previous": None, "next": None}})


def routes(component) -> list[Route]:
    h = AuthHandlers(component)
    return [
        Route("/", h.versions, methods=["GET"]),
        Route("/v3", h.version, methods=["GET"]),
        Route("/v3/", h.version, methods=["GET"]),
        Route("/v3/auth/tokens", h.issue, methods=["POST"]),
        Route("/v3/auth/tokens", h.check, methods=["HEAD"]),
        Route("/v3/auth/tokens", h.validate, methods=["GET"]),
        Route("/v3/auth/tokens", h.revoke, methods=["DELETE"]),
        Route("/v3/auth/projects", h.projects, methods=["GET"]),
        Route("/v3/auth/domains", h.domains, methods=["GET"]),
        Route("/v3/auth/system", h.system, methods=["GET"]),
        Route("/v3/auth/catalog", h.catalog, methods=["GET"]),
    ]
