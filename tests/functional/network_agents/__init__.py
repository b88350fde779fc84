"""Tests of the network agents (L2, DHCP, L3, metadata proxy) with their drivers faked."""
