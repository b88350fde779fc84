"""Config drives: the ISO 9660 disk labelled ``config-2`` that cloud-init and friends read.

``build_config_drive(files, output)`` writes ``files`` (path inside the
drive -> text, as ``ServerSpec.metadata_files`` carries them:
``openstack/latest/meta_data.json``, ``openstack/latest/user_data``, ...)
into a scratch tree beside ``output``, makes the ISO (``host.make_iso``) under
a temporary name and renames it to ``output``: a crash leaves no half drive.
What goes into the files is the controller's business (Nova's metadata
layout); this module only refuses paths that would leave the drive.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

from tinystack.compute import host
from tinystack.compute.drivers.base import PermanentFailure

__all__ = ["LABEL", "build_config_drive"]

LABEL = "config-2"


async def build_config_drive(files: dict[str, str], output: Path) -> None:
    tree = output.with_name(output.name + ".tree")
    part = output.with_name(output.name + ".part")
    shutil.rmtree(tree, ignore_errors=True)
    try:
        tree.mkdir(parents=True)
        for name, text in files.items():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise PermanentFailure(f"config drive file {name!r} is not a relative path")
            target = tree.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        try:
            await host.make_iso(part, tree, label=LABEL)
        except host.HostError as exc:
            raise PermanentFailure(f"could not make the config drive: {exc}") from None
        os.replace(part, output)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        part.unlink(missing_ok=True)
