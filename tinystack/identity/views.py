"""Keystone's JSON for each identity resource, links included.

Extra attributes a client stored (Keystone keeps unknown fields of users,
projects, domains...) are merged back in, as Keystone returns them.
"""

from __future__ import annotations

from starlette.requests import Request

from tinystack.identity.web import iso

__all__ = ["Views"]


class Views:
    def __init__(self, base):
        self.base = base  # callable(request) -> ".../v3"

    def _links(self, request: Request, path: str) -> dict:
        return {"self": f"{self.base(request)}/{path}"}

    def domain(self, request: Request, d) -> dict:
        return {**(d.extra or {}), "id": d.id, "name": d.name, "description": d.description,
                "enabled": d.enabled, "tags": [], "options": {},
                "links": self._links(request, f"domains/{d.id}")}

    def project(self, request: Request, p) -> dict:
        return {**(p.extra or {}), "id": p.id, "name": p.name, "domain_id": p.domain_id,
                "description": p.description, "enabled": p.enabled,
                "parent_id": p.parent_id or p.domain_id, "is_domain": False,
                "tags": list(p.tags or []), "options": {},
                "links": self._links(request, f"projects/{p.id}")}

    def user(self, request: Request, u, password_expires_at=None) -> dict:
        body = {**(u.extra or {}), "id": u.id, "name": u.name, "domain_id": u.domain_id,
                "enabled": u.enabled, "password_expires_at": iso(password_expires_at),
                "options": dict(u.options or {}),
                "links": self._links(request, f"users/{u.id}")}
        if u.default_project_id:
            body["default_project_id"] = u.default_project_id
        return body

    def group(self, request: Request, g) -> dict:
        return {"id": g.id, "name": g.name, "domain_id": g.domain_id,
                "description": g.description, "links": self._links(request, f"groups/{g.id}")}

    def role(self, request: Request, r) -> dict:
        return {"id": r.id, "name": r.name, "domain_id": r.domain_id,
                "description": r.description, "options": dict(r.options or {}),
                "links": self._links(request, f"roles/{r.id}")}

    def role_ref(self, request: Request, r) -> dict:
        return {"id": r.id, "name": r.name, "links": self._links(request, f"roles/{r.id}")}

    def region(self, request: Request, r) -> dict:
        return {**(r.extra or {}), "id": r.id, "description": r.description,
                "parent_region_id": r.parent_region_id,
                "links": self._links(request, f"regions/{r.id}")}

    def service(self, request: Request, s) -> dict:
        return {**(s.extra or {}), "id": s.id, "type": s.type, "name": s.name,
                "description": s.description, "enabled": s.enabled,
                "links": self._links(request, f"services/{s.id}")}

    def endpoint(self, request: Request, e) -> dict:
        return {**(e.extra or {}), "id": e.id, "service_id": e.service_id,
                "interface": e.interface, "url": e.url, "region_id": e.region_id,
                "region": e.region_id, "enabled": e.enabled,
                "links": self._links(request, f"endpoints/{e.id}")}

    def credential(self, request: Request, c: dict) -> dict:
        return {**c, "links": self._links(request, f"credentials/{c['id']}")}

    def ec2(self, request: Request, c: dict) -> dict:
        import orjson

        blob = orjson.loads(c["blob"])
        return {"user_id": c["user_id"], "tenant_id": c["project_id"],
                "access": blob.get("access"), "secret": blob.get("secret"),
                "trust_id": blob.get("trust_id"),
                "links": self._links(request,
                                     f"users/{c['user_id']}/credentials/OS-EC2/{blob.get('access')}")}

    def application_credential(self, request: Request, a, roles: list[dict]) -> dict:
        return {"id": a.id, "name": a.name, "description": a.description,
                "user_id": a.user_id, "project_id": a.project_id,
                "expires_at": iso(a.expires_at), "unrestricted": a.unrestricted,
                "system": a.system, "roles": roles, "access_rules": list(a.access_rules or []),
                "links": self._links(request,
                                     f"users/{a.user_id}/application_credentials/{a.id}")}
