"""A veth pair from a bridge on the host into a namespace: a DHCP server's or a router's leg.

``plug`` makes the pair ``outside`` (on the host, in ``bridge``) and ``device``
(inside the namespace) exist as wanted, whatever a crash or an older spec left:
a host end that carries another owner's alias is refused, a half-made pair is
made again, and the inside end ends up with exactly the wanted MAC, MTU and
addresses. The DHCP and router drivers share it.
"""

from __future__ import annotations

from tinystack.network.agents import host
from tinystack.network.agents.drivers.base import PermanentFailure

__all__ = ["plug"]


async def plug(nl: host.Netlink, inside: host.Netlink, *, outside: str, device: str,
               namespace: str, alias: str, want: dict) -> None:
    """``want`` holds ``mac``, ``mtu``, ``addresses`` (CIDRs) and ``bridge``."""
    link = await nl.link(outside)
    if link is not None and link.alias != alias:
        raise PermanentFailure(f"device {outside} exists and is not ours")
    found = await inside.link(device)
    if link is None or found is None:
        if found is not None:
            await inside.delete_link(device)
        if link is not None:
            await nl.delete_link(outside)
        await nl.add_veth(outside, device, peer_netns=namespace, alias=alias)
    await inside.set_link(device, mac=want["mac"], mtu=want["mtu"], up=True)
    have = await inside.addresses(device)
    for cidr in sorted(set(want["addresses"]) - have):
        await inside.add_address(device, cidr)
    for cidr in sorted(have - set(want["addresses"])):
        await inside.delete_address(device, cidr)
    bridge = await nl.link(want["bridge"])
    link = await nl.link(outside)
    master = want["bridge"] if bridge is not None and link.master != bridge.index else None
    await nl.set_link(outside, mtu=want["mtu"], master=master, up=True)
