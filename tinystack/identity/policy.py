"""Who may do what in the identity API: the whole table, in one place.

Roles imply each other (admin -> member -> reader, made by bootstrap), so a
rule naming ``reader`` admits members and admins too. ``admin`` anywhere is
the cloud administrator, as with Keystone's defaults. The checks are defined
in ``common/policy.py``; the three added here compare the caller with the
target the API passes in (``domain_id``, ``project_id``, ``user_id``,
``token_user_id``).
"""

from tinystack.common.policy import Policy

__all__ = ["POLICY", "policy"]

READ_ANY = "admin or system_reader or domain_reader"

POLICY = {
    # domains
    "identity:get_domain": f"{READ_ANY} or in_domain",
    "identity:list_domains": "admin or system_reader",
    "identity:create_domain": "admin",
    "identity:update_domain": "admin",
    "identity:delete_domain": "admin",
    # projects
    "identity:get_project": f"{READ_ANY} or own_project",
    "identity:list_projects": READ_ANY,
    "identity:list_user_projects": f"{READ_ANY} or owner",
    "identity:create_project": "admin",
    "identity:update_project": "admin",
    "identity:delete_project": "admin",
    # users
    "identity:get_user": f"{READ_ANY} or owner",
    "identity:list_users": READ_ANY,
    "identity:create_user": "admin",
    "identity:update_user": "admin",
    "identity:delete_user": "admin",
    # groups
    "identity:get_group": READ_ANY,
    "identity:list_groups": READ_ANY,
    "identity:list_groups_for_user": f"{READ_ANY} or owner",
    "identity:create_group": "admin",
    "identity:update_group": "admin",
    "identity:delete_group": "admin",
    "identity:list_users_in_group": READ_ANY,
    "identity:check_user_in_group": READ_ANY,
    "identity:add_user_to_group": "admin",
    "identity:remove_user_from_group": "admin",
    # roles and grants
    "identity:get_role": READ_ANY,
    "identity:list_roles": READ_ANY,
    "identity:create_role": "admin",
    "identity:update_role": "admin",
    "identity:delete_role": "admin",
    "identity:get_implied_role": "admin or system_reader",
    "identity:list_implied_roles": "admin or system_reader",
    "identity:list_role_inference_rules": "admin or system_reader",
    "identity:create_implied_role": "admin",
    "identity:delete_implied_role": "admin",
    "identity:check_grant": READ_ANY,
    "identity:list_grants": READ_ANY,
    "identity:create_grant": "admin",
    "identity:revoke_grant": "admin",
    "identity:list_role_assignments": f"{READ_ANY} or project_reader",
    # catalog
    "identity:get_region": "any",
    "identity:list_regions": "any",
    "identity:create_region": "admin",
    "identity:update_region": "admin",
    "identity:delete_region": "admin",
    "identity:get_service": "admin or system_reader",
    "identity:list_services": "admin or system_reader",
    "identity:create_service": "admin",
    "identity:update_service": "admin",
    "identity:delete_service": "admin",
    "identity:get_endpoint": "admin or system_reader",
    "identity:list_endpoints": "admin or system_reader",
    "identity:create_endpoint": "admin",
    "identity:update_endpoint": "admin",
    "identity:delete_endpoint": "admin",
    # credentials
    "identity:get_credential": "admin or system_reader or owner",
    "identity:list_credentials": "admin or system_reader or owner",
    "identity:create_credential": "admin or owner",
    "identity:update_credential": "admin or owner",
    "identity:delete_credential": "admin or owner",
    "identity:ec2_get_credential": "admin or system_reader or owner",
    "identity:ec2_list_credentials": "admin or system_reader or owner",
    "identity:ec2_create_credential": "admin or owner",
    "identity:ec2_delete_credential": "admin or owner",
    "identity:get_application_credential": "admin or system_reader or owner",
    "identity:list_application_credentials": "admin or system_reader or owner",
    "identity:create_application_credential": "owner",
    "identity:delete_application_credential": "admin or owner",
    # tokens
    "identity:validate_token": "admin or system_reader or role:service or token_subject",
    "identity:check_token": "admin or system_reader or role:service or token_subject",
    "identity:revoke_token": "admin or role:service or token_subject",
}

policy = Policy(POLICY, extra_checks={
    "in_domain": lambda c, t: t.get("domain_id") is not None
    and t.get("domain_id") in (c.domain_id, c.project_domain_id),
    "own_project": lambda c, t: c.project_id is not None and t.get("project_id") == c.project_id,
    "token_subject": lambda c, t: t.get("token_user_id") == c.user_id,
})
