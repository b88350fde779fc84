"""Functional tests: each service in process, over its HTTP API, on every configured database."""
