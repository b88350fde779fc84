"""The identity API through openstacksdk's identity proxy, as a program uses it.

Connections come from the instance's clouds.yaml (found through
``OS_CLIENT_CONFIG_FILE``, as a user's program finds it) or from explicit
credentials, the way a program logs in as a user it just made. The same
scenarios through the ``openstack`` CLI are in ``test_identity_cli.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import keystoneauth1.exceptions
import openstack
import pytest
import yaml
from openstack.connection import Connection
from openstack.exceptions import ForbiddenException


@dataclass
class Account:
    """A user made for one test, with ``member`` on a project of its own."""

    user_id: str
    username: str
    password: str
    project_id: str
    project_name: str


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def connect_cloud(ts, cloud: str) -> Connection:
    """A connection for one of the instance's clouds.yaml entries."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OS_CLIENT_CONFIG_FILE", str(ts.clouds_yaml))
        return openstack.connect(cloud=cloud)


def connect_with(ts, auth_type: str = "password", **auth: str) -> Connection:
    """A connection from explicit credentials only: no clouds.yaml, no OS_* variables."""
    auth_url = yaml.safe_load(ts.clouds_yaml.read_text())["clouds"]["tinystack"]["auth"]["auth_url"]
    return openstack.connect(auth_type=auth_type, auth={"auth_url": auth_url, **auth},
                             load_yaml_config=False, load_envvars=False)


def connect_as(ts, account: Account, password: str | None = None) -> Connection:
    return connect_with(ts, username=account.username, password=password or account.password,
                        user_domain_id="default", project_name=account.project_name,
                        project_domain_id="default")


@pytest.fixture(scope="module")
def admin(tinystack_up) -> Connection:
    return connect_cloud(tinystack_up, "tinystack-admin")


@pytest.fixture(scope="module")
def make_account(admin) -> Callable[[], Account]:
    """``make_account()``: a new user with ``member`` on a new project."""

    def make() -> Account:
        project = admin.identity.create_project(name=unique("proj"), domain_id="default")
        password = uuid.uuid4().hex
        user = admin.identity.create_user(name=unique("user"), password=password,
                                          domain_id="default", default_project_id=project.id)
        admin.identity.assign_project_role_to_user(project, user,
                                                   admin.identity.find_role("member"))
        return Account(user.id, user.name, password, project.id, project.name)

    return make


def test_project_user_and_role_then_connect_as_the_new_user(tinystack_up, admin):
    project_name, username, password = unique("proj"), unique("user"), uuid.uuid4().hex

    project = admin.identity.create_project(name=project_name, description="made by sdk",
                                            domain_id="default")
    user = admin.identity.create_user(name=username, password=password, domain_id="default",
                                      default_project_id=project.id, email="ann@example.org")
    member = admin.identity.find_role("member")
    admin.identity.assign_project_role_to_user(project, user, member)

    assert (project.name, project.description, project.is_enabled) == \
        (project_name, "made by sdk", True)
    assert admin.identity.get_project(project.id).name == project_name
    assert project.id in [p.id for p in admin.identity.projects()]
    assert (user.name, user.email, user.is_enabled, user.default_project_id) == \
        (username, "ann@example.org", True, project.id)
    assert "password" not in admin.identity.get(f"/users/{user.id}").json()["user"]
    assert admin.identity.find_user(username).id == user.id
    assert admin.identity.validate_user_has_project_role(project, user, member)
    assert [(a.role["id"], a.scope["project"]["id"]) for a in
            admin.identity.role_assignments(user_id=user.id, scope_project_id=project.id)] == \
        [(member.id, project.id)]

    ann = connect_with(tinystack_up, username=username, password=password,
                       user_domain_id="default", project_name=project_name,
                       project_domain_id="default")

    assert ann.authorize()
    assert (ann.current_user_id, ann.current_project_id) == (user.id, project.id)
    assert ann.identity.get_project(project.id).name == project_name
    assert [p.id for p in ann.identity.user_projects(user.id)] == [project.id]
    with pytest.raises(ForbiddenException) as refused:
        ann.identity.create_project(name=unique("proj"), domain_id="default")
    assert refused.value.status_code == 403

    updated = admin.identity.update_project(project, description="renamed", is_enabled=True)
    assert updated.description == "renamed"
    assert ann.identity.get_project(project.id).description == "renamed"


def test_member_cloud_gets_403_on_user_writes_and_lists(tinystack_up, admin):
    demo = connect_cloud(tinystack_up, "tinystack")
    name = unique("mallory")

    with pytest.raises(ForbiddenException) as create:
        demo.identity.create_user(name=name, password="pw", domain_id="default")
    with pytest.raises(ForbiddenException) as listing:
        list(demo.identity.users())

    assert create.value.status_code == 403 and listing.value.status_code == 403
    assert demo.identity.get_user(demo.current_user_id).name == "demo"
    assert admin.identity.find_user(name) is None


def test_custom_role_assign_and_unassign(admin, make_account):
    ann = make_account()
    role = admin.identity.create_role(name=unique("observer"))

    admin.identity.assign_project_role_to_user(ann.project_id, ann.user_id, role.id)
    granted = admin.identity.validate_user_has_project_role(ann.project_id, ann.user_id, role.id)
    roles = {a.role["id"] for a in admin.identity.role_assignments(
        user_id=ann.user_id, scope_project_id=ann.project_id)}
    admin.identity.unassign_project_role_from_user(ann.project_id, ann.user_id, role.id)

    assert granted is True
    assert role.id in roles and admin.identity.find_role("member").id in roles
    assert admin.identity.validate_user_has_project_role(
        ann.project_id, ann.user_id, role.id) is False
    admin.identity.delete_role(role)
    assert admin.identity.find_role(role.name) is None


def test_application_credential_connects_until_deleted(tinystack_up, make_account):
    ann = make_account()
    ann_conn = connect_as(tinystack_up, ann)

    cred = ann_conn.identity.create_application_credential(
        user=ann.user_id, name="ci", description="for ci")
    by_cred = connect_with(tinystack_up, "v3applicationcredential",
                           application_credential_id=cred.id,
                           application_credential_secret=cred.secret)

    assert cred.secret and cred.project_id == ann.project_id
    assert "member" in [role["name"] for role in cred.roles]
    assert (by_cred.current_user_id, by_cred.current_project_id) == \
        (ann.user_id, ann.project_id)
    assert by_cred.identity.get_project(ann.project_id).name == ann.project_name
    listed = list(ann_conn.identity.application_credentials(user=ann.user_id))
    assert [(c.id, c.name, c.description) for c in listed] == [(cred.id, "ci", "for ci")]
    assert all(c.secret is None for c in listed)

    wrong = connect_with(tinystack_up, "v3applicationcredential",
                         application_credential_id=cred.id,
                         application_credential_secret="not-" + cred.secret)
    with pytest.raises(keystoneauth1.exceptions.Unauthorized):
        wrong.session.get_token()

    ann_conn.identity.delete_application_credential(ann.user_id, cred.id)
    with pytest.raises(keystoneauth1.exceptions.Unauthorized):
        connect_with(tinystack_up, "v3applicationcredential", application_credential_id=cred.id,
                     application_credential_secret=cred.secret).session.get_token()


def test_deleting_a_user_ends_its_sessions(tinystack_up, admin, make_account):
    ann = make_account()
    ann_conn = connect_as(tinystack_up, ann)
    assert ann_conn.identity.get_project(ann.project_id).name == ann.project_name

    admin.identity.delete_user(ann.user_id)

    with pytest.raises(keystoneauth1.exceptions.Unauthorized):
        ann_conn.identity.get_project(ann.project_id)
    assert admin.identity.find_user(ann.username) is None


def test_admin_resets_password(tinystack_up, admin, make_account):
    ann = make_account()
    new_password = uuid.uuid4().hex

    admin.identity.update_user(ann.user_id, password=new_password)

    assert connect_as(tinystack_up, ann, new_password).session.get_token()
    with pytest.raises(keystoneauth1.exceptions.Unauthorized):
        connect_as(tinystack_up, ann).session.get_token()


def test_groups(admin, make_account):
    ann, bob = make_account(), make_account()
    group = admin.identity.create_group(name=unique("group"), description="ops",
                                        domain_id="default")

    admin.identity.add_user_to_group(ann.user_id, group.id)
    admin.identity.add_user_to_group(bob.user_id, group.id)
    admin.identity.remove_user_from_group(bob.user_id, group.id)

    assert admin.identity.get_group(group.id).description == "ops"
    assert admin.identity.check_user_in_group(ann.user_id, group.id) is True
    assert admin.identity.check_user_in_group(bob.user_id, group.id) is False
    assert [u.id for u in admin.identity.group_users(group.id)] == [ann.user_id]


def test_catalog_services_endpoints_regions(tinystack_up, admin):
    (identity,) = [s for s in admin.identity.services() if s.type == "identity"]
    endpoints = list(admin.identity.endpoints(service_id=identity.id))

    assert identity.name == "keystone" and identity.is_enabled
    assert sorted(e.interface for e in endpoints) == ["admin", "internal", "public"]
    assert {e.url for e in endpoints} == {f"{tinystack_up.url}/identity"}
    assert {e.region_id for e in endpoints} == {"RegionOne"}
    assert "RegionOne" in [r.id for r in admin.identity.regions()]
    assert admin.session.get_endpoint(service_type="identity", interface="public") == \
        f"{tinystack_up.url}/identity"
