"""Nova's JSON for each compute resource, shaped by the request's microversion.

``Shaper`` carries what a view depends on besides the resource: the
microversion, whether the caller is an admin (extended server attributes,
fault details, host status), and the URL the client reached the API by (for
``links``: ``self`` under ``/v2.1``, ``bookmark`` without it, as Nova).
The microversion rules are the ones listed in ``docs/compute.md``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from tinystack.compute import states
from tinystack.compute.flavors import FlavorView
from tinystack.compute.groups import GroupView
from tinystack.compute.hosts import HypervisorView, ServiceView
from tinystack.compute.listing import ServerRecord
from tinystack.compute.microversions import Microversion
from tinystack.compute.models import InstanceAction, InstanceActionEvent, KeyPair

__all__ = ["Shaper", "iso", "iso_micro"]

_PROGRESS = ("ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING")


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def host_id(project_id: str, host: str | None) -> str:
    return hashlib.sha224(f"{project_id}{host}".encode()).hexdigest() if host else ""


@dataclass
class Shaper:
    mv: Microversion
    is_admin: bool
    base: str
    """The compute root the client used, e.g. http://host:8080/compute."""

    # -- links --------------------------------------------------------------------------

    def links(self, kind: str, item_id: str) -> list[dict]:
        return [{"rel": "self", "href": f"{self.base}/v2.1/{kind}/{item_id}"},
                {"rel": "bookmark", "href": f"{self.base}/{kind}/{item_id}"}]

    def bookmark(self, kind: str, item_id: str) -> list[dict]:
        return [{"rel": "bookmark", "href": f"{self.base}/{kind}/{item_id}"}]

    # -- servers ------------------------------------------------------------------------

    def server_brief(self, record: ServerRecord) -> dict:
        server = record.server
        return {"id": server.id, "name": server.name, "links": self.links("servers", server.id)}

    def _image(self, record: ServerRecord, with_properties: bool) -> dict | str:
        server = record.server
        if not server.image_ref:
            return ""
        image: dict = {"id": server.image_ref, "links": self.bookmark("images",
                                                                     server.image_ref)}
        if with_properties and self.mv >= "2.98":
            props = (server.image or {}).get("properties") or {}
            image["properties"] = {k: (v if v is None else str(v)[:255])
                                   for k, v in props.items()}
        return image

    def _flavor(self, record: ServerRecord) -> dict:
        flavor = record.server.flavor
        if self.mv < "2.47":
            return {"id": flavor["flavorid"], "links": self.bookmark("flavors",
                                                                     flavor["flavorid"])}
        return {"vcpus": flavor["vcpus"], "ram": flavor["memory_mb"], "disk": flavor["root_gb"],
                "ephemeral": flavor.get("ephemeral_gb", 0), "swap": flavor.get("swap", 0),
                "original_name": flavor["name"],
                "extra_specs": dict(flavor.get("extra_specs") or {})}

    @staticmethod
    def _addresses(record: ServerRecord, extended: bool) -> dict:
        out = {}
        for network, addrs in (record.server.addresses or {}).items():
            if extended:
                out[network] = [dict(a) for a in addrs]
            else:
                out[network] = [{"version": a.get("version", 4), "addr": a["addr"]}
                                for a in addrs]
        return out

    def _fault(self, record: ServerRecord) -> dict | None:
        server = record.server
        fault = server.fault
        if not fault or server.vm_state not in (states.ERROR, states.DELETED):
            return None
        body = {"code": fault["code"], "created": fault["created"], "message": fault["message"]}
        if self.is_admin or fault["code"] != 500:
            body["details"] = fault.get("details") or ""
        return body

    def server(self, record: ServerRecord, *, full: bool = True, groups: bool = False,
               image_properties: bool = True) -> dict:
        """A server as show and detail give it (``full=False``: update/rebuild before 2.75)."""
        server, mv = record.server, self.mv
        status = states.status_of(server.vm_state, server.task_state)
        body: dict = {
            "id": server.id, "name": server.name, "status": status,
            "tenant_id": server.project_id, "user_id": server.user_id,
            "metadata": dict(record.metadata), "hostId": host_id(server.project_id, server.host),
            "image": self._image(record, image_properties), "flavor": self._flavor(record),
            "created": iso(server.created_at), "updated": iso(server.updated_at),
            "addresses": self._addresses(record, full), "accessIPv4": server.access_ipv4 or "",
            "accessIPv6": server.access_ipv6 or "", "links": self.links("servers", server.id),
            "OS-DCF:diskConfig": server.disk_config,
        }
        if status in _PROGRESS:
            body["progress"] = server.progress or 0
        fault = self._fault(record)
        if fault is not None:
            body["fault"] = fault
        if full:
            self._extend(record, body)
        if mv >= "2.9":
            body["locked"] = server.locked
        if mv >= "2.19":
            body["description"] = server.description
        if mv >= "2.26":
            body["tags"] = list(record.tags)
        if mv >= "2.63":
            body["trusted_image_certificates"] = None
        if groups and mv >= "2.71":
            body["server_groups"] = list(record.groups)
        if mv >= "2.73":
            body["locked_reason"] = server.locked_reason
        if full and mv >= "2.96":
            body["pinned_availability_zone"] = server.requested_availability_zone
        if full and mv >= "2.100":
            body["scheduler_hints"] = dict(server.scheduler_hints or {})
        return body

    def _extend(self, record: ServerRecord, body: dict) -> None:
        server, mv = record.server, self.mv
        body.update({
            "OS-EXT-AZ:availability_zone": server.availability_zone or "",
            "config_drive": "True" if server.config_drive else "",
            "key_name": server.key_name,
            "OS-SRV-USG:launched_at": iso_micro(server.launched_at),
            "OS-SRV-USG:terminated_at": iso_micro(server.terminated_at),
            "OS-EXT-STS:task_state": server.task_state,
            "OS-EXT-STS:vm_state": server.vm_state,
            "OS-EXT-STS:power_state": server.power_state,
            "os-extended-volumes:volumes_attached": [],
        })
        if server.security_groups:
            body["security_groups"] = [{"name": n} for n in server.security_groups]
        if self.is_admin:
            body["OS-EXT-SRV-ATTR:host"] = server.host
            body["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{server.id[:8]}"
            body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = server.node if server.host else None
            if mv >= "2.3":
                props = (server.image or {}).get("properties") or {}
                body.update({
                    "OS-EXT-SRV-ATTR:reservation_id": server.reservation_id,
                    "OS-EXT-SRV-ATTR:launch_index": server.launch_index,
                    "OS-EXT-SRV-ATTR:hostname": server.hostname,
                    "OS-EXT-SRV-ATTR:kernel_id": props.get("kernel_id", ""),
                    "OS-EXT-SRV-ATTR:ramdisk_id": props.get("ramdisk_id", ""),
                    "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                    "OS-EXT-SRV-ATTR:user_data": server.user_data,
                })
            if mv >= "2.16":
                body["host_status"] = record.host_status
        elif mv >= "2.90":
            body["OS-EXT-SRV-ATTR:hostname"] = server.hostname

    def addresses(self, record: ServerRecord) -> dict:
        return self._addresses(record, False)

    # -- instance actions ---------------------------------------------------------------

    def action(self, action: InstanceAction) -> dict:
        body = {"action": action.action, "instance_uuid": action.server_id,
                "message": action.message, "project_id": action.project_id,
                "request_id": action.request_id, "start_time": iso_micro(action.start_time),
                "user_id": action.user_id}
        if self.mv >= "2.58":
            body["updated_at"] = iso_micro(action.updated_at)
        return body

    def action_detail(self, action: InstanceAction, events: list[InstanceActionEvent],
                      project_id: str, host: str | None, show_events: bool) -> dict:
        body = self.action(action)
        if not (show_events or self.mv >= "2.51"):
            return body
        shown = []
        for event in events:
            item = {"event": event.event, "start_time": iso_micro(event.start_time),
                    "finish_time": iso_micro(event.finish_time), "result": event.result}
            if self.is_admin:
                item["traceback"] = event.traceback
            if self.mv >= "2.62":
                item["hostId"] = host_id(project_id, event.host)
                if self.is_admin:
                    item["host"] = event.host or ""
            if self.mv >= "2.84":
                item["details"] = event.details
            shown.append(item)
        body["events"] = shown
        return body

    # -- flavors ------------------------------------------------------------------------

    def flavor_brief(self, view: FlavorView) -> dict:
        flavor = view.flavor
        body = {"id": flavor.flavorid, "name": flavor.name,
                "links": self.links("flavors", flavor.flavorid)}
        if self.mv >= "2.55":
            body["description"] = flavor.description
        return body

    def flavor(self, view: FlavorView, *, extra_specs: bool = True) -> dict:
        flavor = view.flavor
        swap: int | str = flavor.swap
        if self.mv < "2.75" and not flavor.swap:
            swap = ""
        body = {"id": flavor.flavorid, "name": flavor.name, "ram": flavor.memory_mb,
                "disk": flavor.root_gb, "vcpus": flavor.vcpus,
                "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral_gb, "swap": swap,
                "rxtx_factor": flavor.rxtx_factor,
                "os-flavor-access:is_public": flavor.is_public,
                "OS-FLV-DISABLED:disabled": flavor.disabled,
                "links": self.links("flavors", flavor.flavorid)}
        if self.mv >= "2.55":
            body["description"] = flavor.description
        if self.mv >= "2.61" and extra_specs:
            body["extra_specs"] = dict(view.extra_specs)
        return body

    # -- key pairs ----------------------------------------------------------------------

    def keypair_brief(self, keypair: KeyPair) -> dict:
        body = {"name": keypair.name, "public_key": keypair.public_key,
                "fingerprint": keypair.fingerprint}
        if self.mv >= "2.2":
            body["type"] = keypair.type
        return {"keypair": body}

    def keypair(self, keypair: KeyPair) -> dict:
        body = {"name": keypair.name, "public_key": keypair.public_key,
                "fingerprint": keypair.fingerprint, "user_id": keypair.user_id,
                "created_at": iso_micro(keypair.created_at), "deleted": False,
                "deleted_at": None, "updated_at": None, "id": keypair.id}
        if self.mv >= "2.2":
            body["type"] = keypair.type
        return body

    def keypair_created(self, keypair: KeyPair, private_key: str | None) -> dict:
        body = {"name": keypair.name, "public_key": keypair.public_key,
                "fingerprint": keypair.fingerprint, "user_id": keypair.user_id}
        if private_key is not None:
            body["private_key"] = private_key
        if self.mv >= "2.2":
            body["type"] = keypair.type
        return body

    # -- server groups ------------------------------------------------------------------

    def server_group(self, view: GroupView) -> dict:
        group = view.group
        body: dict = {"id": group.id, "name": group.name, "members": list(view.members)}
        if self.mv >= "2.64":
            body["policy"] = group.policy
            body["rules"] = dict(group.rules or {})
        else:
            body["policies"] = [group.policy]
            body["metadata"] = {}
        if self.mv >= "2.13":
            body["project_id"] = group.project_id
            body["user_id"] = group.user_id
        return body

    # -- services and hypervisors -------------------------------------------------------

    def service(self, view: ServiceView) -> dict:
        service = view.service
        body = {"id": service.uuid if self.mv >= "2.53" else service.id,
                "binary": service.binary, "host": service.host, "zone": view.zone,
                "status": "disabled" if service.disabled else "enabled",
                "state": "up" if view.up else "down", "updated_at": iso_micro(
                    service.updated_at), "disabled_reason": service.disabled_reason}
        if self.mv >= "2.11":
            body["forced_down"] = service.forced_down
        return body

    def hypervisor(self, view: HypervisorView, *, detail: bool,
                   with_servers: bool = False) -> dict:
        node, service = view.node, view.service
        body: dict = {"id": node.uuid if self.mv >= "2.53" else node.id,
                      "hypervisor_hostname": node.hypervisor_hostname,
                      "state": "up" if view.up else "down",
                      "status": "disabled" if service is not None and service.disabled
                      else "enabled"}
        if detail:
            body.update({
                "host_ip": node.host_ip, "hypervisor_type": node.hypervisor_type,
                "hypervisor_version": node.hypervisor_version,
                "service": {"host": node.host,
                            "id": (service.uuid if self.mv >= "2.53" else service.id)
                            if service is not None else None,
                            "disabled_reason": service.disabled_reason if service else None},
            })
            if self.mv < "2.88":
                cpu_info = dict(node.cpu_info or {})
                body.update({
                    "vcpus": node.vcpus, "memory_mb": node.memory_mb,
                    "local_gb": node.local_gb, "vcpus_used": node.vcpus_used,
                    "memory_mb_used": node.memory_mb_used,
                    "local_gb_used": node.local_gb_used,
                    "free_ram_mb": node.memory_mb - node.memory_mb_used,
                    "free_disk_gb": node.local_gb - node.local_gb_used,
                    "current_workload": 0, "running_vms": node.running_vms,
                    "disk_available_least": node.local_gb - node.local_gb_used,
                    "cpu_info": cpu_info if self.mv >= "2.28" else _json(cpu_info),
                })
            else:
                body["uptime"] = node.uptime or None
        if with_servers and (view.servers or self.mv >= "2.75"):
            body["servers"] = [{"uuid": sid, "name": name} for sid, name in view.servers]
        return body


def _json(value: dict) -> str:
    return json.dumps(value)
