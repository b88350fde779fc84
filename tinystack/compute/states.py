"""Nova's server states and how the API shows them.

A server has a ``vm_state`` (what it is), a ``task_state`` (what is being
done to it, None when idle) and a ``power_state`` (what its node last saw).
The API's ``status`` is computed from the first two, as Nova's
``api/openstack/common.py`` does. ``WANT_FOR`` says which desired state
(``ServerSpec.want``) each stable vm_state asks of the node; ``VM_STATE_FOR``
turns an agent's reported state back into a vm_state.

Who moves a server between states is in ``actions.py`` (user actions),
``scheduler.py`` (BUILD to ERROR on no valid host) and ``conductor.py``
(reports from the nodes).
"""

from __future__ import annotations

__all__ = [
    "ACTIVE", "BUILDING", "STOPPED", "PAUSED", "SUSPENDED", "RESIZED", "ERROR", "DELETED",
    "POWER_STATES", "POWER_CODE", "status_of", "STATUSES", "AGENT_TASKS", "WANT_FOR",
    "VM_STATE_FOR",
]

ACTIVE = "active"
BUILDING = "building"
STOPPED = "stopped"
PAUSED = "paused"
SUSPENDED = "suspended"
RESIZED = "resized"
ERROR = "error"
DELETED = "deleted"

POWER_STATES = {0: "NOSTATE", 1: "RUNNING", 3: "PAUSED", 4: "SHUTDOWN", 6: "CRASHED",
                7: "SUSPENDED"}
POWER_CODE = {"nostate": 0, "running": 1, "paused": 3, "shutdown": 4, "crashed": 6,
              "suspended": 7}
"""ServerReport.power_state -> the integer ``OS-EXT-STS:power_state`` shows."""

_DEFAULT = "default"
_STATUS = {
    ACTIVE: {_DEFAULT: "ACTIVE", "rebooting": "REBOOT", "reboot_pending": "REBOOT",
             "reboot_started": "REBOOT", "rebooting_hard": "HARD_REBOOT",
             "reboot_pending_hard": "HARD_REBOOT", "reboot_started_hard": "HARD_REBOOT",
             "rebuilding": "REBUILD", "rebuild_spawning": "REBUILD",
             "resize_prep": "RESIZE", "resize_migrating": "RESIZE",
             "resize_migrated": "RESIZE", "resize_finish": "RESIZE",
             "migrating": "MIGRATING", "set_admin_password": "PASSWORD"},
    BUILDING: {_DEFAULT: "BUILD"},
    STOPPED: {_DEFAULT: "SHUTOFF", "resize_prep": "RESIZE", "resize_migrating": "RESIZE",
              "resize_migrated": "RESIZE", "resize_finish": "RESIZE",
              "rebuilding": "REBUILD", "rebuild_spawning": "REBUILD"},
    RESIZED: {_DEFAULT: "VERIFY_RESIZE", "resize_reverting": "REVERT_RESIZE"},
    PAUSED: {_DEFAULT: "PAUSED", "migrating": "MIGRATING"},
    SUSPENDED: {_DEFAULT: "SUSPENDED"},
    ERROR: {_DEFAULT: "ERROR", "rebuilding": "REBUILD", "rebuild_spawning": "REBUILD"},
    DELETED: {_DEFAULT: "DELETED"},
    "soft-delete": {_DEFAULT: "SOFT_DELETED"},
    "shelved": {_DEFAULT: "SHELVED"},
    "shelved_offloaded": {_DEFAULT: "SHELVED_OFFLOADED"},
    "rescued": {_DEFAULT: "RESCUE"},
}

STATUSES = frozenset({
    "ACTIVE", "BUILD", "DELETED", "ERROR", "HARD_REBOOT", "MIGRATING", "PASSWORD", "PAUSED",
    "REBOOT", "REBUILD", "RESCUE", "RESIZE", "REVERT_RESIZE", "SHELVED",
    "SHELVED_OFFLOADED", "SHUTOFF", "SOFT_DELETED", "SUSPENDED", "UNKNOWN", "VERIFY_RESIZE",
})
"""Every status a ``status`` filter may name (anything else is a 400 from 2.38 on)."""

AGENT_TASKS = frozenset({
    "scheduling", "networking", "block_device_mapping", "spawning",
    "rebooting", "rebooting_hard", "powering-off", "powering-on", "pausing", "unpausing",
    "suspending", "resuming", "rebuilding", "rebuild_spawning", "resize_prep",
    "resize_migrating", "resize_finish", "resize_reverting", "deleting",
})
"""Task states that end when the node reports the newest revision (or on timeout)."""

WANT_FOR = {ACTIVE: "active", BUILDING: "active", STOPPED: "stopped", PAUSED: "paused",
            SUSPENDED: "suspended", RESIZED: "active", ERROR: "active"}

VM_STATE_FOR = {"active": ACTIVE, "stopped": STOPPED, "paused": PAUSED,
                "suspended": SUSPENDED, "building": BUILDING, "error": ERROR,
                "deleted": DELETED}


def status_of(vm_state: str, task_state: str | None) -> str:
    """The API ``status`` of a server, e.g. ("active", "rebooting") -> "REBOOT"."""
    by_task = _STATUS.get(vm_state)
    if by_task is None:
        return "UNKNOWN"
    return by_task.get(task_state or _DEFAULT, by_task[_DEFAULT])
