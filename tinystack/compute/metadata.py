"""The metadata service guests read, and the same files for their config drive.

Guests reach ``/metadata`` through the network node's metadata proxy, which
adds ``X-Instance-ID``, ``X-Tenant-ID`` and ``X-Instance-ID-Signature``
(HMAC-SHA256 of the instance id under the shared secret, hex), as Neutron's
metadata agent does for Nova. A request whose signature does not match, or
whose tenant is not the server's, is refused, so a guest cannot read another
guest's data by forging headers.

Two trees, as Nova serves them:

- OpenStack: ``/openstack`` (versions), ``/openstack/latest/`` (files),
  ``meta_data.json``, ``user_data``, ``network_data.json``,
  ``vendor_data.json``, ``vendor_data2.json``;
- EC2: ``/`` (versions), ``/latest/``, ``/latest/meta-data/`` and its
  leaves (``instance-id``, ``hostname``, ``public-keys/0/openssh-key``,
  ``placement/availability-zone``...), ``/latest/user-data``.

``ServerFacts`` is everything the files are made of; ``build_files`` makes
the config drive's ``ServerSpec.metadata_files`` from the same functions.
The facts come from ``MetadataLookup`` (``servers.py`` implements it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["ServerFacts", "build_files", "meta_data", "network_data", "ec2_meta_data",
           "sign", "MetadataApp", "OPENSTACK_VERSIONS", "EC2_VERSIONS"]

log = logging.getLogger(__name__)

OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
                      "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "latest")
EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
                "2008-02-01", "2008-09-01", "2009-04-04", "latest")
_OPENSTACK_FILES = ("meta_data.json", "network_data.json", "vendor_data.json",
                    "vendor_data2.json", "user_data")


@dataclass(frozen=True)
class ServerFacts:
    """What a server's metadata is made of."""

    id: str
    name: str
    hostname: str
    project_id: str
    availability_zone: str
    launch_index: int = 0
    reservation_id: str = ""
    flavor_name: str = ""
    image_id: str = ""
    key_name: str | None = None
    key_data: str | None = None
    key_type: str = "ssh"
    metadata: dict[str, str] = field(default_factory=dict)
    user_data: bytes | None = None
    security_groups: tuple[str, ...] = ()
    fixed_ips: tuple[str, ...] = ()
    floating_ips: tuple[str, ...] = ()
    ports: tuple[dict, ...] = ()


def sign(secret: str, instance_id: str) -> str:
    """The X-Instance-ID-Signature the proxy sends for ``instance_id``."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def meta_data(facts: ServerFacts) -> dict:
    """``openstack/latest/meta_data.json``."""
    body: dict = {
        "uuid": facts.id, "meta": dict(facts.metadata), "hostname": facts.hostname,
        "name": facts.name, "launch_index": facts.launch_index,
        "availability_zone": facts.availability_zone, "project_id": facts.project_id,
        "random_seed": base64.b64encode(
            hashlib.sha512(f"{facts.id}{facts.reservation_id}".encode()).digest() * 8
        ).decode(),
        "devices": [], "dedicated_cpus": [],
    }
    if facts.key_name and facts.key_data:
        body["public_keys"] = {facts.key_name: facts.key_data}
        body["keys"] = [{"name": facts.key_name, "type": facts.key_type,
                         "data": facts.key_data}]
    return body


def network_data(facts: ServerFacts) -> dict:
    """``openstack/latest/network_data.json``: links, networks and DNS of the ports."""
    links, networks = [], []
    for index, port in enumerate(facts.ports):
        link_id = port.get("device") or f"tap{port['port_id'][:11]}"
        links.append({"id": link_id, "vif_id": port["port_id"], "type": "bridge",
                      "mtu": port.get("mtu", 1500),
                      "ethernet_mac_address": port["mac"]})
        for ip_index, fixed in enumerate(port.get("fixed_ips") or []):
            network = {"id": f"network{index}-{ip_index}", "link": link_id,
                       "network_id": fixed.get("network_id", ""),
                       "type": "ipv6_dhcp" if ":" in fixed.get("ip_address", "") else "ipv4_dhcp"}
            networks.append(network)
    return {"links": links, "networks": networks, "services": []}


def _hostname(facts: ServerFacts) -> str:
    return facts.hostname or facts.name


def ec2_meta_data(facts: ServerFacts) -> dict:
    """The EC2 ``meta-data`` tree as nested dicts (leaves are strings)."""
    tree: dict = {
        "ami-id": facts.image_id, "ami-launch-index": str(facts.launch_index),
        "ami-manifest-path": "FIXME",  # the literal Nova serves; EC2 tools expect the key
        "hostname": _hostname(facts),
        "instance-action": "none", "instance-id": facts.id,
        "instance-type": facts.flavor_name, "local-hostname": _hostname(facts),
        "local-ipv4": facts.fixed_ips[0] if facts.fixed_ips else "",
        "placement": {"availability-zone": facts.availability_zone},
        "public-hostname": _hostname(facts),
        "public-ipv4": facts.floating_ips[0] if facts.floating_ips else "",
        "reservation-id": facts.reservation_id,
        "security-groups": "\n".join(facts.security_groups),
        "block-device-mapping": {"ami": "vda", "root": "/dev/vda"},
    }
    if facts.key_name and facts.key_data:
        tree["public-keys"] = {"0": {"openssh-key": facts.key_data, "_name": facts.key_name}}
    return tree


def _openstack_file(facts: ServerFacts, name: str) -> bytes | None:
    if name == "meta_data.json":
        return json.dumps(meta_data(facts)).encode()
    if name == "network_data.json":
        return json.dumps(network_data(facts)).encode()
    if name in ("vendor_data.json", "vendor_data2.json"):
        return b"{}"
    if name == "user_data":
        return facts.user_data
    return None


def build_files(facts: ServerFacts) -> dict[str, str]:
    """Config drive contents, path -> text, as ``ServerSpec.metadata_files`` carries them.

    User data that is not UTF-8 text is carried with undecodable bytes replaced (the
    bus message is JSON); the metadata service serves it byte for byte.
    """
    files: dict[str, str] = {}
    for version in ("2012-08-10", "latest"):
        for name in _OPENSTACK_FILES:
            content = _openstack_file(facts, name)
            if content is not None:
                files[f"openstack/{version}/{name}"] = content.decode(errors="replace")
    files["ec2/latest/meta-data.json"] = json.dumps(_ec2_json(ec2_meta_data(facts)))
    return files


def _ec2_json(tree: dict) -> dict:
    out = {}
    for key, value in tree.items():
        if key == "public-keys":
            out[key] = {"0": {"openssh-key": value["0"]["openssh-key"]}}
        elif isinstance(value, dict):
            out[key] = _ec2_json(value)
        else:
            out[key] = value
    return out


# -- the HTTP app ------------------------------------------------------------------------

MetadataLookup = Callable[[str], Awaitable[ServerFacts | None]]
"""instance id -> its facts, or None when no live server has that id."""


def _text(body: str | bytes, status: int = 200) -> Response:
    if isinstance(body, bytes):
        return Response(body, status_code=status, media_type="text/plain")
    return PlainTextResponse(body, status_code=status)


class MetadataApp:
    """The ASGI app mounted at ``/metadata``; ``secret`` is the proxy's shared secret."""

    def __init__(self, lookup: MetadataLookup, secret: Callable[[], str]):
        self.lookup = lookup
        self.secret = secret
        self.app = Starlette(routes=[Route("/{path:path}", self.serve, methods=["GET"])])

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)

    async def _facts(self, request: Request) -> ServerFacts | Response:
        instance_id = request.headers.get("x-instance-id")
        tenant_id = request.headers.get("x-tenant-id")
        signature = request.headers.get("x-instance-id-signature")
        if not instance_id:
            return _text("X-Instance-ID header is missing from request.", 400)
        if not tenant_id:
            return _text("X-Tenant-ID header is missing from request.", 400)
        if not signature:
            return _text("X-Instance-ID-Signature header is missing from request.", 400)
        if not hmac.compare_digest(sign(self.secret(), instance_id), signature):
            log.warning("metadata: bad signature for instance %s from %s", instance_id,
                        request.headers.get("x-forwarded-for", "?"))
            return _text("Invalid proxy request signature.", 403)
        facts = await self.lookup(instance_id)
        if facts is None:
            return _text("Not Found", 404)
        if facts.project_id != tenant_id:
            log.warning("metadata: tenant %s does not own instance %s", tenant_id, instance_id)
            return _text("Tenant_id %s does not match tenant_id of instance %s."
                         % (tenant_id, instance_id), 403)
        return facts

    async def serve(self, request: Request) -> Response:
        facts = await self._facts(request)
        if isinstance(facts, Response):
            return facts
        parts = [p for p in request.path_params["path"].split("/") if p]
        if parts[:1] == ["openstack"]:
            return self._openstack(facts, parts[1:])
        return self._ec2(facts, parts)

    @staticmethod
    def _openstack(facts: ServerFacts, parts: list[str]) -> Response:
        if not parts:
            return _text("\n".join(OPENSTACK_VERSIONS))
        if parts[0] not in OPENSTACK_VERSIONS:
            return _text("Not Found", 404)
        if len(parts) == 1:
            names = [n for n in _OPENSTACK_FILES if n != "user_data" or facts.user_data]
            return _text("\n".join(names))
        content = _openstack_file(facts, parts[1]) if len(parts) == 2 else None
        if content is None:
            return _text("Not Found", 404)
        media = "application/json" if parts[1].endswith(".json") else "text/plain"
        return Response(content, media_type=media)

    @staticmethod
    def _ec2(facts: ServerFacts, parts: list[str]) -> Response:
        if not parts:
            return _text("\n".join(EC2_VERSIONS))
        if parts[0] not in EC2_VERSIONS:
            return _text("Not Found", 404)
        if len(parts) == 1:
            return _text("meta-data/\nuser-data" if facts.user_data else "meta-data/")
        if parts[1] == "user-data" and len(parts) == 2:
            return _text(facts.user_data) if facts.user_data else _text("Not Found", 404)
        if parts[1] != "meta-data":
            return _text("Not Found", 404)
        node: object = ec2_meta_data(facts)
        for part in parts[2:]:
            if not isinstance(node, dict):
                return _text("Not Found", 404)
            if node.get("_name") is not None and part not in node:
                return _text("Not Found", 404)
            node = node.get(part)
            if node is None:
                return _text("Not Found", 404)
        if isinstance(node, dict):
            return _text(_listing(node, parts))
        return _text(str(node))


def _listing(node: dict, parts: list[str]) -> str:
    """A directory of the EC2 tree: ``name`` for leaves, ``name/`` for directories."""
    if parts[2:] == ["public-keys"]:
        return "\n".join(f"{key}={value['_name']}" for key, value in node.items())
    if node.get("_name") is not None:
        return "\n".join(k for k in node if k != "_name")
    return "\n".join(f"{k}/" if isinstance(v, dict) else k for k, v in node.items())
