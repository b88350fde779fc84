"""tinystack: an OpenStack-compatible cloud in one Python package.

Start reading at ``cloud.py`` (what one process runs) and ``identity/`` (the
service every other one copies); the map is docs/ and DESIGN.md.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
