"""The network agents: what makes networks, DHCP, routers and security groups real on a node.

Agents (each serves its bus target and reconciles, ``reconcile.py``):
``l2.py`` (bridges, VXLAN, port devices, the packet filter), ``dhcp.py``
(dnsmasq per network), ``l3.py`` (router namespaces, NAT, floating IPs) and
``metadata.py`` (the 169.254.169.254 proxy). Drivers (``drivers/``) do the
Linux work through ``host.py``, the only module that runs privileged
commands; ``security_groups.py`` renders the nftables rules. ``node.py``
wires them into a process for the compute and network roles. The contract
with the network service is ``tinystack/network/messages.py``.
"""
