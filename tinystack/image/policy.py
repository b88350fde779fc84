"""Who may do what in the image API: Glance's default (secure RBAC) rules in one table.

Roles imply each other (admin -> member -> reader), so ``reader`` admits
members and admins too; ``admin`` on any project is the cloud administrator,
as in Glance. The target of an image rule is ``target(image, creds)``:
``project_id`` is the image's owner, ``visibility`` its visibility and
``member_id`` the caller's project when that project is a member of it.

Who may *see* an image (owner, public, community, a member of a shared
image) is decided by ``service.py`` while it reads, as Glance's database
layer does; a hidden image is a 404, never a 403. ``enforce`` raises
``Forbidden`` with Glance's wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tinystack.common.errors import Forbidden
from tinystack.common.policy import Credentials, Policy

__all__ = ["POLICY", "policy", "enforce", "allowed", "target", "is_admin"]

OWNER = "admin or project_member"

POLICY = {
    "add_image": OWNER,
    "get_image": "admin or reader",
    "get_images": "admin or reader",
    "modify_image": OWNER,
    "publicize_image": "admin",
    "communitize_image": OWNER,
    "delete_image": OWNER,
    "upload_image": OWNER,
    "download_image": "admin or member",
    "deactivate": OWNER,
    "reactivate": OWNER,
    "add_member": OWNER,
    "delete_member": OWNER,
    "get_member": "admin or reader",
    "get_members": "admin or reader",
    "modify_member": "admin or image_member",
    "stores_info_detail": "admin",
}

policy = Policy(POLICY, extra_checks={
    "image_member": lambda c, t: (
        "member" in c.roles and c.project_id is not None and t.get("member_id") == c.project_id),
})


def is_admin(creds: Credentials) -> bool:
    return "admin" in creds.roles


def target(owner: str | None, visibility: str | None = None,
           member_id: str | None = None) -> dict[str, Any]:
    return {"project_id": owner, "visibility": visibility, "member_id": member_id}


def allowed(action: str, creds: Credentials, target: Mapping | None = None) -> bool:
    return policy.allowed(action, creds, target)


def enforce(action: str, creds: Credentials, target: Mapping | None = None) -> None:
    if not policy.allowed(action, creds, target):
        raise Forbidden(f"You are not authorized to complete {action} action.")
