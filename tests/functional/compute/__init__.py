"""Tests of the compute service: the API over ASGI with fakes, the agent with a fake driver."""
