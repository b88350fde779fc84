"""Imports every service's models so the one metadata knows every table.

Alembic's environment and the tests call ``import_all``; nothing else should
need to, since each service imports its own models.
"""

import importlib

__all__ = ["import_all", "MODEL_MODULES"]

MODEL_MODULES = ("tinystack.identity.models", "tinystack.image.models",
                 "tinystack.compute.models", "tinystack.network.models")


def import_all() -> None:
    for name in MODEL_MODULES:
        importlib.import_module(name)
