"""Hypervisor drivers of the compute agent: the interface in base.py, QEMU in qemu.py."""
