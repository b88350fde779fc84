"""Backends of the network agents: the interfaces (``base.py``) and their Linux versions."""
