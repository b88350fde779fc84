"""The compute agent's record of what each server on this node should be, kept on disk.

One JSON file per server under ``<data_dir>/compute/desired/<server_id>.json``
(mode 0600: a spec carries a service token), written to a temporary name and
renamed, so a crash leaves the old record or the new one, never half of one.
The agent writes a spec here before it touches the machine, which is what lets
a restarted agent (even after ``kill -9``) finish or undo what it was doing.

A record holds the newest ``ServerSpec`` the controller sent (an older
revision never replaces a newer one), the revision whose one-shot actions
(boot, reboot) are done, a permanent fault and the revision it belongs to, and
whether the agent itself stopped the guest (so it starts it again). A delete
is a spec with ``want="deleted"``: a tombstone, kept ``tombstone_ttl`` seconds
after it was applied so that a late, older spec cannot bring the server back.

The agent (``agent.py``) is the only user; this module knows nothing of drivers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tinystack.compute.messages import ServerSpec

__all__ = ["DesiredStore", "Record", "valid_server_id"]

log = logging.getLogger(__name__)

_SERVER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def valid_server_id(server_id: str) -> bool:
    """Ids become file, process and device names: letters, digits, ``-`` and ``_`` only."""
    return bool(_SERVER_ID.match(server_id))


@dataclass
class Record:
    """Everything the agent remembers of one server."""

    spec: ServerSpec
    applied: int = 0
    """Revision whose one-shot actions (boot, reboot, delete) are done."""
    failed: int = 0
    """Revision that failed for good; the agent leaves it alone until a newer one comes."""
    fault: str | None = None
    resume: bool = False
    """The agent stopped this guest when it shut down; start it again."""
    applied_at: float | None = None
    """Wall-clock time a tombstone was applied (for pruning)."""

    @property
    def deleted(self) -> bool:
        return self.spec.want == "deleted"

    def to_json(self) -> dict:
        body = asdict(self)
        body["spec"] = self.spec.model_dump(mode="json")
        return body

    @classmethod
    def from_json(cls, body: dict) -> Record:
        fields = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        fields["spec"] = ServerSpec.model_validate(body["spec"])
        return cls(**fields)


class DesiredStore:
    """Records by server id, in memory and in ``directory``."""

    def __init__(self, directory: Path, *, tombstone_ttl: float = 86400.0, wall=time.time):
        self.directory = directory
        self.tombstone_ttl = tombstone_ttl
        self._wall = wall
        self._records: dict[str, Record] = {}

    def load(self) -> None:
        """Read every record on disk; unreadable files are logged and skipped."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*.json")):
            try:
                record = Record.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("compute: ignoring unreadable record %s: %s", path, exc)
                continue
            if record.spec.id == path.stem and valid_server_id(record.spec.id):
                self._records[record.spec.id] = record
        for leftover in self.directory.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def ids(self) -> list[str]:
        return list(self._records)

    def get(self, server_id: str) -> Record | None:
        return self._records.get(server_id)

    def offer(self, spec: ServerSpec) -> bool:
        """Keep ``spec`` if it is newer than what we have; False (and nothing kept) if not.

        The same revision is kept too when it brings a token the kept one lacks: the
        controller's audit re-sends a missing server's spec without one (it keeps no
        tokens), and may do so just before the build's own spec, which carries it.
        """
        if not valid_server_id(spec.id):
            raise ValueError(f"server id {spec.id!r} is not a plain name")
        current = self._records.get(spec.id)
        if current is not None and spec.revision <= current.spec.revision:
            brings_token = (spec.revision == current.spec.revision and spec.token
                            and not current.spec.token)
            if not brings_token:
                return False
        if current is None:
            record = Record(spec=spec)
        else:
            record = Record(spec=spec, applied=current.applied, failed=current.failed,
                            fault=current.fault, resume=current.resume)
        self._save(record)
        return True

    def update(self, server_id: str, **changes) -> Record:
        """Change fields of a record (``applied``, ``failed``, ``fault``, ``resume``) and save."""
        record = self._records[server_id]
        for name, value in changes.items():
            setattr(record, name, value)
        if record.deleted and "applied" in changes and record.applied_at is None:
            record.applied_at = self._wall()
        self._save(record)
        return record

    def forget(self, server_id: str) -> None:
        self._records.pop(server_id, None)
        (self.directory / f"{server_id}.json").unlink(missing_ok=True)

    def prune(self) -> list[str]:
        """Forget tombstones applied more than ``tombstone_ttl`` seconds ago; their ids."""
        now = self._wall()
        old = [sid for sid, r in self._records.items()
               if r.deleted and r.applied_at is not None and now - r.applied_at > self.tombstone_ttl]
        for server_id in old:
            self.forget(server_id)
        return old

    def _save(self, record: Record) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{record.spec.id}.json"
        tmp = self.directory / f".{record.spec.id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(record.to_json(), out)
        os.replace(tmp, path)
        self._records[record.spec.id] = record
