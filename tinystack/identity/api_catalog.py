"""Routes for the catalog (regions, services, endpoints) and for secrets a
user holds (credentials, EC2 keys, application credentials).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tinystack.common.errors import Forbidden, NotFound
from tinystack.common.http import json_response, read_json
from tinystack.identity import schemas
from tinystack.identity.credentials import ec2_credential_id
from tinystack.identity.web import Handlers, no_content

__all__ = ["CatalogHandlers", "routes"]


class CatalogHandlers(Handlers):
    @property
    def v(self):
        return self.c.views

    @property
    def cat(self):
        return self.c.catalog

    @property
    def creds(self):
        return self.c.credentials

    # -- regions ---------------------------------------------------------------

    async def list_regions(self, request: Request) -> Response:
        await self.enforce(request, "identity:list_regions")
        found = await self.run(self.cat.list_regions, self.query(request, "parent_region_id"))
        return self.collection(request, "regions", [self.v.region(request, r) for r in found])

    async def _create_region(self, request: Request, region_id: str | None) -> Response:
        await self.enforce(request, "identity:create_region")
        body = (await read_json(request, schemas.RegionBody)).region
        region = await self.run(self.cat.create_region, region_id or body.id,
                                body.description or "", body.parent_region_id, body.model_extra)
        return json_response({"region": self.v.region(request, region)}, 201)

    async def create_region(self, request: Request) -> Response:
        return await self._create_region(request, None)

    async def put_region(self, request: Request) -> Response:
        return await self._create_region(request, request.path_params["region_id"])

    async def get_region(self, request: Request) -> Response:
        await self.enforce(request, "identity:get_region")
        region = await self.run(self.cat.get_region, request.path_params["region_id"])
        return json_response({"region": self.v.region(request, region)})

    async def update_region(self, request: Request) -> Response:
        await self.enforce(request, "identity:update_region")
        body = (await read_json(request, schemas.RegionPatch)).region
        region = await self.run(self.cat.update_region, request.path_params["region_id"],
                                body.model_dump(exclude_unset=True))
        return json_response({"region": self.v.region(request, region)})

    async def delete_region(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_region")
        await self.run(self.cat.delete_region, request.path_params["region_id"])
        return no_content()

    # -- services --------------------------------------------------------------

    async def list_services(self, request: Request) -> Response:
        await self.enforce(request, "identity:list_services")
        found = await self.run(self.cat.list_services, self.query(request, "type"),
                               self.query(request, "name"))
        return self.collection(request, "services", [self.v.service(request, s) for s in found])

    async def create_service(self, request: Request) -> Response:
        await self.enforce(request, "identity:create_service")
        body = (await read_json(request, schemas.ServiceBody)).service
        service = await self.run(self.cat.create_service, body.type, body.name or "",
                                 body.description or "", body.enabled, body.model_extra)
        return json_response({"service": self.v.service(request, service)}, 201)

    async def get_service(self, request: Request) -> Response:
        await self.enforce(request, "identity:get_service")
        service = await self.run(self.cat.get_service, request.path_params["service_id"])
        return json_response({"service": self.v.service(request, service)})

    async def update_service(self, request: Request) -> Response:
        await self.enforce(request, "identity:update_service")
        body = (await read_json(request, schemas.ServicePatch)).service
        service = await self.run(self.cat.update_service, request.path_params["service_id"],
                                 body.model_dump(exclude_unset=True))
        return json_response({"service": self.v.service(request, service)})

    async def delete_service(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_service")
        await self.run(self.cat.delete_service, request.path_params["service_id"])
        return no_content()

    # -- endpoints -------------------------------------------------------------

    async def list_endpoints(self, request: Request) -> Response:
        await self.enforce(request, "identity:list_endpoints")
        found = await self.run(self.cat.list_endpoints, self.query(request, "interface"),
                               self.query(request, "service_id"),
                               self.query(request, "region_id"))
        return self.collection(request, "endpoints",
                               [self.v.endpoint(request, e) for e in found])

    async def create_endpoint(self, request: Request) -> Response:
        await self.enforce(request, "identity:create_endpoint")
        body = (await read_json(request, schemas.EndpointBody)).endpoint
        extra = {k: v for k, v in (body.model_extra or {}).items()}
        endpoint = await self.run(self.cat.create_endpoint, body.service_id, body.interface,
                                  body.url, body.region_id or body.region, body.enabled, extra)
        return json_response({"endpoint": self.v.endpoint(request, endpoint)}, 201)

    async def get_endpoint(self, request: Request) -> Response:
        await self.enforce(request, "identity:get_endpoint")
        endpoint = await self.run(self.cat.get_endpoint, request.path_params["endpoint_id"])
        return json_response({"endpoint": self.v.endpoint(request, endpoint)})

    async def update_endpoint(self, request: Request) -> Response:
        await self.enforce(request, "identity:update_endpoint")
        body = (await read_json(request, schemas.EndpointPatch)).endpoint
        endpoint = await self.run(self.cat.update_endpoint, request.path_params["endpoint_id"],
                                  body.model_dump(exclude_unset=True))
        return json_response({"endpoint": self.v.endpoint(request, endpoint)})

    async def delete_endpoint(self, request: Request) -> Response:
        await self.enforce(request, "identity:delete_endpoint")
        await self.run(self.cat.delete_endpoint, request.path_params["endpoint_id"])
        return no_content()

    # -- credentials -------------------------------------------------------------

    async def list_credentials(self, request: Request) -> Response:
        caller = await self.caller(request)
        user_id = self.query(request, "user_id")
        if not self.allowed(caller, "identity:list_credentials", user_id=None):
            user_id = caller.payload.user_id
        found = await self.run(self.creds.list_credentials, user_id, self.query(request, "type"))
        return self.collection(request, "credentials",
                               [self.v.credential(request, c) for c in found])

    async def create_credential(self, request: Request) -> Response:
        await self.caller(request)  # 401 before any complaint about the body
        body = (await read_json(request, schemas.CredentialBody)).credential
        await self.enforce(request, "identity:create_credential", user_id=body.user_id)
        cred = await self.run(self.creds.create_credential, user_id=body.user_id,
                              type=body.type, blob=body.blob, project_id=body.project_id,
                              extra=body.model_extra)
        return json_response({"credential": self.v.credential(request, cred)}, 201)

    async def _own_credential(self, request: Request, action: str) -> dict:
        caller = await self.caller(request)
        try:
            cred = await self.run(self.creds.get_credential, request.path_params["credential_id"])
        except NotFound:
            if not self.allowed(caller, action, user_id=None):
                raise Forbidden(f"You are not authorized to perform the requested action: "
                                f"{action}.") from None
            raise
        await self.enforce(request, action, user_id=cred["user_id"])
        return cred

    async def get_credential(self, request: Request) -> Response:
        cred = await self._own_credential(request, "identity:get_credential")
        return json_response({"credential": self.v.credential(request, cred)})

    async def update_credential(self, request: Request) -> Response:
        await self._own_credential(request, "identity:update_credential")
        body = (await read_json(request, schemas.CredentialPatch)).credential
        cred = await self.run(self.creds.update_credential, request.path_params["credential_id"],
                              body.model_dump(exclude_unset=True))
        return json_response({"credential": self.v.credential(request, cred)})

    async def delete_credential(self, request: Request) -> Response:
        await self._own_credential(request, "identity:delete_credential")
        await self.run(self.creds.delete_credential, request.path_params["credential_id"])
        return no_content()

    # -- EC2 keys (OS-EC2) -------------------------------------------------------

    async def list_ec2(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        await self.enforce(request, "identity:ec2_list_credentials", user_id=user_id)
        found = await self.run(self.creds.list_credentials, user_id, "ec2")
        return self.collection(request, "credentials", [self.v.ec2(request, c) for c in found])

    async def create_ec2(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        await self.enforce(request, "identity:ec2_create_credential", user_id=user_id)
        body = await read_json(request, schemas.Ec2Body)
        await self.run(self.identity.get_project, body.tenant_id)
        cred = await self.run(self.creds.create_ec2, user_id, body.tenant_id)
        return json_response({"credential": self.v.ec2(request, cred)}, 201)

    async def _ec2(self, request: Request, action: str) -> dict:
        user_id = request.path_params["user_id"]
        await self.enforce(request, action, user_id=user_id)
        access = request.path_params["access"]
        cred = await self.run(self.creds.get_credential, ec2_credential_id(access))
        if cred["user_id"] != user_id or cred["type"] != "ec2":
            raise NotFound(f"Could not find credential: {access}.")
        return cred

    async def get_ec2(self, request: Request) -> Response:
        cred = await self._ec2(request, "identity:ec2_get_credential")
        return json_response({"credential": self.v.ec2(request, cred)})

    async def delete_ec2(self, request: Request) -> Response:
        cred = await self._ec2(request, "identity:ec2_delete_credential")
        await self.run(self.creds.delete_credential, cred["id"])
        return no_content()

    # -- application credentials ---------------------------------------------------

    async def list_app_creds(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        await self.enforce(request, "identity:list_application_credentials", user_id=user_id)
        found = await self.run(self.creds.list_application_credentials, user_id,
                               self.query(request, "name"))
        items = [self.v.application_credential(request, a, self.creds.role_names(a.role_ids))
                 for a in found]
        return self.collection(request, "application_credentials", items)

    async def create_app_cred(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        caller = await self.enforce(request, "identity:create_application_credential",
                                    user_id=user_id)
        if caller.payload.application_credential_id:
            raise Forbidden("Using method 'application_credential' is not allowed for managing "
                            "additional application credentials.")
        if not caller.payload.project_id:
            raise Forbidden("An application credential is made from a project-scoped token.")
        body = (await read_json(request, schemas.AppCredBody)).application_credential
        expires = body.expires_at.replace(tzinfo=None) if body.expires_at else None
        cred, secret = await self.run(
            self.creds.create_application_credential, user_id=user_id,
            project_id=caller.payload.project_id, name=body.name,
            token_role_ids=caller.role_ids, secret=body.secret,
            description=body.description or "", expires_at=expires,
            roles=[r.model_dump(exclude_none=True) for r in body.roles],
            unrestricted=body.unrestricted, access_rules=body.access_rules)
        view = self.v.application_credential(request, cred, self.creds.role_names(cred.role_ids))
        view["secret"] = secret
        return json_response({"application_credential": view}, 201)

    async def get_app_cred(self, request: Request) -> Response:
        p = request.path_params
        await self.enforce(request, "identity:get_application_credential", user_id=p["user_id"])
        cred = await self.run(self.creds.get_application_credential, p["user_id"], p["cred_id"])
        return json_response({"application_credential": self.v.application_credential(
            request, cred, self.creds.role_names(cred.role_ids))})

    async def delete_app_cred(self, request: Request) -> Response:
        p = request.path_params
        caller = await self.enforce(request, "identity:delete_application_credential",
                                    user_id=p["user_id"])
        if caller.payload.application_credential_id:
            raise Forbidden("Using method 'application_credential' is not allowed for managing "
                            "additional application credentials.")
        await self.run(self.creds.delete_application_credential, p["user_id"], p["cred_id"])
        return no_content()


def routes(component) -> list[Route]:
    h = CatalogHandlers(component)
    return [
        Route("/v3/regions", h.list_regions, methods=["GET"]),
        Route("/v3/regions", h.create_region, methods=["POST"]),
        Route("/v3/regions/{region_id}", h.get_region, methods=["GET"]),
        Route("/v3/regions/{region_id}", h.put_region, methods=["PUT"]),
        Route("/v3/regions/{region_id}", h.update_region, methods=["PATCH"]),
        Route("/v3/regions/{region_id}", h.delete_region, methods=["DELETE"]),
        Route("/v3/services", h.list_services, methods=["GET"]),
        Route("/v3/services", h.create_service, methods=["POST"]),
        Route("/v3/services/{service_id}", h.get_service, methods=["GET"]),
        Route("/v3/services/{service_id}", h.update_service, methods=["PATCH"]),
        Route("/v3/services/{service_id}", h.delete_service, methods=["DELETE"]),
        Route("/v3/endpoints", h.list_endpoints, methods=["GET"]),
        Route("/v3/endpoints", h.create_endpoint, methods=["POST"]),
        Route("/v3/endpoints/{endpoint_id}", h.get_endpoint, methods=["GET"]),
        Route("/v3/endpoints/{endpoint_id}", h.update_endpoint, methods=["PATCH"]),
        Route("/v3/endpoints/{endpoint_id}", h.delete_endpoint, methods=["DELETE"]),
        Route("/v3/credentials", h.list_credentials, methods=["GET"]),
        Route("/v3/credentials", h.create_credential, methods=["POST"]),
        Route("/v3/credentials/{credential_id}", h.get_credential, methods=["GET"]),
        Route("/v3/credentials/{credential_id}", h.update_credential, methods=["PATCH"]),
        Route("/v3/credentials/{credential_id}", h.delete_credential, methods=["DELETE"]),
        Route("/v3/users/{user_id}/credentials/OS-EC2", h.list_ec2, methods=["GET"]),
        Route("/v3/users/{user_id}/credentials/OS-EC2", h.create_ec2, methods=["POST"]),
        Route("/v3/users/{user_id}/credentials/OS-EC2/{access}", h.get_ec2, methods=["GET"]),
        Route("/v3/users/{user_id}/credentials/OS-EC2/{access}", h.delete_ec2,
              methods=["DELETE"]),
        Route("/v3/users/{user_id}/application_credentials", h.list_app_creds,
              methods=["GET"]),
        Route("/v3/users/{user_id}/application_credentials", h.create_app_cred,
              methods=["POST"]),
        Route("/v3/users/{user_id}/application_credentials/{cred_id}", h.get_app_cred,
              methods=["GET"]),
        Route("/v3/users/{user_id}/application_credentials/{cred_id}", h.delete_app_cred,
              methods=["DELETE"]),
    ]
