"""``python -m tinystack``: the same command as ``tinystack`` (see ``cli.py``)."""

from tinystack.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
