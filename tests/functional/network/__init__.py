"""Tests of the network service: the Neutron API over ASGI, and the specs agents are sent."""
