"""Who may do what in the compute API: Nova's default rules (secure RBAC), in one table.

Roles imply each other (admin -> member -> reader), so ``project_reader``
admits members and admins of the project too. ``admin`` anywhere is the
cloud administrator. The API passes the target's ``project_id`` (and
``user_id`` for key pairs); ``enforce`` raises Nova's 403, "Policy doesn't
allow <rule> to be performed."
"""

from __future__ import annotations

from collections.abc import Mapping

from tinystack.common.errors import Forbidden
from tinystack.common.policy import Credentials, Policy

__all__ = ["POLICY", "policy", "enforce", "allowed"]

ADMIN = "admin"
MEMBER = "admin or project_member"
READER = "admin or project_reader"
OWNER = "admin or owner"

_SERVER_READ = ("servers:index", "servers:detail", "servers:show", "ips:index", "ips:show",
                "server-metadata:index", "server-metadata:show", "os-server-tags:index",
                "os-server-tags:show", "os-instance-actions:list", "os-instance-actions:show",
                "os-instance-actions:events:details")
_SERVER_WRITE = (
    "servers:create", "servers:update", "servers:delete", "servers:reboot", "servers:stop",
    "servers:start", "servers:resize", "servers:confirm_resize", "servers:revert_resize",
    "servers:rebuild", "servers:create_image", "os-pause-server:pause",
    "os-pause-server:unpause", "os-suspend-server:suspend", "os-suspend-server:resume",
    "os-lock-server:lock", "os-lock-server:unlock", "os-console-output",
    "os-remote-consoles", "os-security-groups:add", "os-security-groups:remove",
    "server-metadata:create", "server-metadata:update", "server-metadata:update_all",
    "server-metadata:delete", "os-server-tags:update", "os-server-tags:update_all",
    "os-server-tags:delete", "os-server-tags:delete_all", "os-server-groups:create",
    "os-server-groups:delete", "os-server-groups:index", "os-server-groups:show",
)
_ADMIN_ONLY = (
    "servers:index:get_all_tenants", "servers:detail:get_all_tenants",
    "servers:create:forced_host", "servers:create:requested_destination",
    "servers:show:host_status", "os-extended-server-attributes",
    "os-lock-server:unlock:unlock_override", "os-instance-actions:events",
    "os-flavor-manage:create", "os-flavor-manage:update", "os-flavor-manage:delete",
    "os-flavor-extra-specs:create", "os-flavor-extra-specs:update",
    "os-flavor-extra-specs:delete", "os-flavor-access", "os-flavor-access:add_tenant_access",
    "os-flavor-access:remove_tenant_access", "limits:other_project",
    "os-quota-sets:update", "os-quota-sets:delete", "os-quota-class-sets:show",
    "os-quota-class-sets:update", "os-hypervisors:list", "os-hypervisors:list-detail",
    "os-hypervisors:show", "os-hypervisors:statistics", "os-hypervisors:uptime",
    "os-hypervisors:search", "os-hypervisors:servers", "os-services:list",
    "os-services:update", "os-services:delete", "os-availability-zone:detail",
    "os-server-groups:index:all_projects", "os-aggregates:index",
)

POLICY: dict[str, str] = {
    **{f"os_compute_api:{name}": READER for name in _SERVER_READ},
    **{f"os_compute_api:{name}": MEMBER for name in _SERVER_WRITE},
    **{f"os_compute_api:{name}": ADMIN for name in _ADMIN_ONLY},
    "os_compute_api:os-flavor-extra-specs:index": "any",
    "os_compute_api:os-flavor-extra-specs:show": "any",
    "os_compute_api:os-keypairs:index": OWNER,
    "os_compute_api:os-keypairs:show": OWNER,
    "os_compute_api:os-keypairs:create": OWNER,
    "os_compute_api:os-keypairs:delete": OWNER,
    "os_compute_api:limits": "any",
    "os_compute_api:os-quota-sets:show": READER,
    "os_compute_api:os-quota-sets:detail": READER,
    "os_compute_api:os-quota-sets:defaults": "any",
    "os_compute_api:os-availability-zone:list": "any",
}

policy = Policy(POLICY)


def allowed(rule: str, creds: Credentials, **target) -> bool:
    return policy.allowed(f"os_compute_api:{rule}", creds, target)


def enforce(rule: str, creds: Credentials, target: Mapping | None = None, **more) -> None:
    name = f"os_compute_api:{rule}"
    if not policy.allowed(name, creds, {**(target or {}), **more}):
        raise Forbidden(f"Policy doesn't allow {name} to be performed.")
