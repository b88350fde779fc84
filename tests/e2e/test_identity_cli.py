"""The identity API as a person drives it with the real ``openstack`` CLI.

Every ``openstack`` call is a real subprocess against ``tinystack up -d``
(``-f json`` output parsed); a refused call must exit non-zero and print
the HTTP status. Each call costs a second or two of client start-up, so the
checks are grouped, independent calls run side by side, and what a test
only sets up or looks at afterwards goes through openstacksdk in-process
(``test_identity_sdk.py`` drives the SDK itself).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keystoneauth1.exceptions
import openstack
import pytest
import yaml

OPENSTACK = Path(sys.executable).parent / "openstack"


# -- helpers ------------------------------------------------------------------------


@dataclass
class Account:
    """A user made for one test, with a project of its own and a role on it."""

    user_id: str
    username: str
    password: str
    project_id: str
    project_name: str

    def password_auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password,
                "user-domain-id": "default", "project-name": self.project_name,
                "project-domain-id": "default"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def parsed(result: subprocess.CompletedProcess) -> Any:
    return json.loads(result.stdout)


def cloud_auth(ts, cloud: str) -> dict:
    """The ``auth`` section of one of the instance's clouds.yaml entries."""
    return yaml.safe_load(ts.clouds_yaml.read_text())["clouds"][cloud]["auth"]


def openstack_with(ts, auth: dict[str, str], *args: str, auth_type: str = "password",
                   check: bool = True) -> subprocess.CompletedProcess:
    """Run ``openstack`` with only command-line credentials (no clouds.yaml entry).

    ``auth`` maps option names without ``--os-`` (``username``, ``token``,
    ``application-credential-id``...) to values.
    """
    argv = [str(OPENSTACK), "--os-auth-url", cloud_auth(ts, "tinystack")["auth_url"],
            "--os-identity-api-version", "3", "--os-auth-type", auth_type]
    for name, value in auth.items():
        # One argument: a secret or password may start with "-", which argparse would take
        # for an option of its own when given as the next argument.
        argv.append(f"--os-{name}={value}")
    result = subprocess.run([*argv, *args], env=ts.env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"openstack {' '.join(args)} exited {result.returncode}\n"
                             f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")
    return result


def side_by_side(*calls: Callable[[], Any]) -> list[Any]:
    """Run independent client calls at once; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def assert_refused(result: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert str(status) in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def sdk(ts, cloud: str) -> openstack.connection.Connection:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OS_CLIENT_CONFIG_FILE", str(ts.clouds_yaml))
        return openstack.connect(cloud=cloud)


def sdk_login(ts, **auth: str) -> str:
    """A token for explicit credentials, through openstacksdk; raises keystoneauth's 401."""
    conn = openstack.connect(auth_url=cloud_auth(ts, "tinystack")["auth_url"],
                             load_yaml_config=False, load_envvars=False,
                             user_domain_id="default", project_domain_id="default", **auth)
    return conn.session.get_token()


@pytest.fixture(scope="module")
def admin(tinystack_up) -> openstack.connection.Connection:
    """The cloud admin through openstacksdk, for setting up and looking afterwards."""
    return sdk(tinystack_up, "tinystack-admin")


@pytest.fixture(scope="module")
def make_account(admin) -> Callable[..., Account]:
    """``make_account(role="member")``: a new user with ``role`` on a new project."""

    def make(role: str = "member") -> Account:
        project = admin.identity.create_project(name=unique("proj"), domain_id="default")
        password = uuid.uuid4().hex
        user = admin.identity.create_user(name=unique("user"), password=password,
                                          domain_id="default", default_project_id=project.id)
        admin.identity.assign_project_role_to_user(project, user, admin.identity.find_role(role))
        return Account(user.id, user.name, password, project.id, project.name)

    return make


# -- tests --------------------------------------------------------------------------


def test_token_catalog_endpoints_services_regions(tinystack_up):
    ts = tinystack_up
    token, catalog, endpoints, services, regions, system = side_by_side(
        lambda: parsed(ts.openstack("token", "issue", "-f", "json")),
        lambda: parsed(ts.openstack("catalog", "list", "-f", "json")),
        lambda: parsed(ts.openstack("endpoint", "list", "-f", "json")),
        lambda: parsed(ts.openstack("service", "list", "-f", "json")),
        lambda: parsed(ts.openstack("region", "list", "-f", "json")),
        lambda: parsed(ts.openstack("token", "issue", "-f", "json",
                                    cloud="tinystack-system-admin")),
    )

    assert token["id"] and token["project_id"] and token["user_id"]
    assert system["system"] == "all" and system["user_id"] == token["user_id"]

    (identity,) = [entry for entry in catalog if entry["Type"] == "identity"]
    assert identity["Name"] == "keystone"
    by_interface = {e["interface"]: e for e in identity["Endpoints"]}
    assert set(by_interface) == {"public", "internal", "admin"}
    assert {e["url"] for e in by_interface.values()} == {f"{ts.url}/identity"}
    assert {e["region"] for e in by_interface.values()} == {"RegionOne"}

    listed = [e for e in endpoints if e["Service Type"] == "identity"]
    assert sorted(e["Interface"] for e in listed) == ["admin", "internal", "public"]
    assert {e["ID"] for e in listed} == {e["id"] for e in by_interface.values()}
    assert all(e["Enabled"] and e["Service Name"] == "keystone" for e in listed)
    assert {"Name": "keystone", "Type": "identity"}.items() <= \
        next(s for s in services if s["Type"] == "identity").items()
    assert "RegionOne" in [r["Region"] for r in regions]


def test_create_project_and_user_grant_member_then_log_in(tinystack_up, admin):
    ts = tinystack_up
    project_name, username, password = unique("proj"), unique("user"), uuid.uuid4().hex

    project = parsed(ts.openstack("project", "create", "--description", "made by e2e",
                                  "-f", "json", project_name))
    user = parsed(ts.openstack("user", "create", "--password", password, "--project",
                               project_name, "-f", "json", username))
    added = ts.openstack("role", "add", "--user", username, "--project", project_name, "member")
    assignments, token = side_by_side(
        lambda: parsed(ts.openstack("role", "assignment", "list", "--names", "--user", username,
                                    "--project", project_name, "-f", "json")),
        lambda: parsed(openstack_with(ts, {
            "username": username, "password": password, "user-domain-id": "default",
            "project-name": project_name, "project-domain-id": "default",
        }, "token", "issue", "-f", "json")),
    )

    assert project["name"] == project_name and project["enabled"] is True
    assert project["description"] == "made by e2e" and project["domain_id"] == "default"
    assert user["name"] == username and user["enabled"] is True
    assert user["default_project_id"] == project["id"]
    assert added.stdout == ""
    assert [(a["Role"], a["User"], a["Project"], a["Inherited"]) for a in assignments] == \
        [("member", f"{username}@Default", f"{project_name}@Default", False)]
    assert token["user_id"] == user["id"] and token["project_id"] == project["id"]
    assert admin.identity.validate_user_has_project_role(
        project["id"], user["id"], admin.identity.find_role("member"))


def test_member_gets_403_creating_a_user(tinystack_up, admin):
    name = unique("mallory")

    result = tinystack_up.openstack("user", "create", "--password", "pw", name,
                                    cloud="tinystack", check=False)

    assert_refused(result, 403, "identity:create_user")
    assert admin.identity.find_user(name) is None


def test_reader_reads_but_every_write_gets_403(tinystack_up, admin, make_account):
    ts = tinystack_up
    reader = make_account("reader")
    victim = make_account("member")
    admin_role = admin.identity.find_role("admin")
    auth = reader.password_auth()
    new_project, new_user = unique("proj"), unique("user")

    create_project, create_user, add_role, own_project, token = side_by_side(
        lambda: openstack_with(ts, auth, "project", "create", new_project, check=False),
        lambda: openstack_with(ts, auth, "user", "create", "--password", "pw", new_user,
                               check=False),
        # ids, so the CLI falls back from its lookups (denied too) to sending the grant
        lambda: openstack_with(ts, auth, "--debug", "role", "add", "--user", victim.user_id,
                               "--project", reader.project_id, admin_role.id, check=False),
        lambda: openstack_with(ts, auth, "project", "show", "-f", "json", reader.project_id),
        lambda: openstack_with(ts, auth, "token", "issue", "-f", "json"),
    )

    assert_refused(create_project, 403, "identity:create_project")
    assert_refused(create_user, 403, "identity:create_user")
    # openstacksdk's assign_project_role_to_user ignores the PUT's status, so this
    # CLI exits 0 on a refused grant; its --debug log shows the 403 the server sent
    (refusal,) = [line for line in add_role.stderr.splitlines() if "create_grant" in line]
    assert "403" in refusal
    assert parsed(own_project)["name"] == reader.project_name
    assert parsed(token)["user_id"] == reader.user_id
    assert admin.identity.find_project(new_project) is None
    assert admin.identity.find_user(new_user) is None
    assert list(admin.identity.role_assignments(user_id=victim.user_id,
                                                scope_project_id=reader.project_id)) == []


def test_revoked_token_gets_401(tinystack_up):
    ts = tinystack_up
    member = cloud_auth(ts, "tinystack")
    by_token = {"project-name": member["project_name"],
                "project-domain-id": member["project_domain_id"]}
    token = parsed(ts.openstack("token", "issue", "-f", "json", cloud="tinystack"))

    rescoped = parsed(openstack_with(ts, {**by_token, "token": token["id"]}, "token", "issue",
                                     "-f", "json", auth_type="token"))
    ts.openstack("token", "revoke", token["id"], cloud="tinystack")
    refused = openstack_with(ts, {**by_token, "token": token["id"]}, "token", "issue",
                             auth_type="token", check=False)

    assert rescoped["user_id"] == token["user_id"] and rescoped["id"] != token["id"]
    assert_refused(refused, 401)


def test_application_credential_authenticates(tinystack_up, make_account):
    ts = tinystack_up
    alice = make_account("member")

    cred = parsed(openstack_with(ts, alice.password_auth(), "application", "credential",
                                 "create", "--description", "for ci", "-f", "json", "ci"))
    by_cred = {"application-credential-id": cred["ID"]}
    token, wrong = side_by_side(
        lambda: parsed(openstack_with(
            ts, {**by_cred, "application-credential-secret": cred["Secret"]},
            "token", "issue", "-f", "json", auth_type="v3applicationcredential")),
        lambda: openstack_with(
            ts, {**by_cred, "application-credential-secret": "not-" + cred["Secret"]},
            "token", "issue", auth_type="v3applicationcredential", check=False),
    )

    assert cred["Name"] == "ci" and cred["Project ID"] == alice.project_id
    assert "member" in [role["name"] for role in cred["Roles"]]
    assert token["user_id"] == alice.user_id and token["project_id"] == alice.project_id
    assert_refused(wrong, 401)


def test_own_password_change_then_admin_reset(tinystack_up, make_account):
    ts = tinystack_up
    bob = make_account("member")
    login = {"username": bob.username, "project_name": bob.project_name}
    changed, reset = uuid.uuid4().hex, uuid.uuid4().hex

    openstack_with(ts, bob.password_auth(), "user", "password", "set",
                   "--original-password", bob.password, "--password", changed)

    assert sdk_login(ts, password=changed, **login)
    with pytest.raises(keystoneauth1.exceptions.Unauthorized):
        sdk_login(ts, password=bob.password, **login)

    ts.openstack("user", "set", "--password", reset, bob.username)

    assert sdk_login(ts, password=reset, **login)
    with pytest.raises(keystoneauth1.exceptions.Unauthorized):
        sdk_login(ts, password=changed, **login)


def test_group_create_and_add_user(tinystack_up, admin, make_account):
    ts = tinystack_up
    carol = make_account("member")
    name = unique("group")

    group = parsed(ts.openstack("group", "create", "--description", "ops", "-f", "json", name))
    ts.openstack("group", "add", "user", name, carol.username)

    assert group["name"] == name and group["description"] == "ops"
    assert group["domain_id"] == "default"
    assert admin.identity.check_user_in_group(carol.user_id, group["id"])
    assert [u.id for u in admin.identity.group_users(group["id"])] == [carol.user_id]


def test_ec2_credentials_create_list_delete(tinystack_up, make_account):
    ts = tinystack_up
    dave = make_account("member")
    auth = dave.password_auth()

    made = parsed(openstack_with(ts, auth, "ec2", "credentials", "create", "-f", "json"))
    listed = parsed(openstack_with(ts, auth, "ec2", "credentials", "list", "-f", "json"))
    openstack_with(ts, auth, "ec2", "credentials", "delete", made["access"])

    assert made["user_id"] == dave.user_id and made["project_id"] == dave.project_id
    assert made["access"] and made["secret"]
    assert listed == [{"Access": made["access"], "Secret": made["secret"],
                       "Project ID": dave.project_id, "User ID": dave.user_id}]
    dave_sdk = openstack.connect(auth_url=cloud_auth(ts, "tinystack")["auth_url"],
                                 load_yaml_config=False, load_envvars=False,
                                 user_domain_id="default", project_domain_id="default",
                                 username=dave.username, password=dave.password,
                                 project_name=dave.project_name)
    left = dave_sdk.identity.get(f"/users/{dave.user_id}/credentials/OS-EC2")
    assert left.status_code == 200 and left.json()["credentials"] == []


def test_domain_create_disable_delete(tinystack_up, admin):
    ts = tinystack_up
    name = unique("domain")

    domain = parsed(ts.openstack("domain", "create", "--description", "short-lived",
                                 "-f", "json", name))
    enabled_delete = ts.openstack("domain", "delete", name, check=False)
    ts.openstack("domain", "set", "--disable", name)
    disabled = admin.identity.get_domain(domain["id"])
    ts.openstack("domain", "delete", name)

    assert domain["name"] == name and domain["enabled"] is True
    assert domain["description"] == "short-lived"
    assert_refused(enabled_delete, 403, "disable it first")
    assert disabled.is_enabled is False
    assert admin.identity.find_domain(domain["id"]) is None
