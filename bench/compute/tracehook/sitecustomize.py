"""Timestamps along a server's build path, for ``bench/compute/run.py --trace``.

The bench puts this directory first on ``PYTHONPATH`` of the tinystack it
starts and names a file in ``TINYSTACK_BENCH_TRACE``; Python then imports this
module at start-up, and it wraps the functions of the build path (API create,
scheduler, the cast to the node, the agent, the QEMU driver, the image cache,
the report back and the conductor) so each call appends a line to that file:

    {"t": <time.monotonic() at start>, "end": <at end>, "fn": "drv.power_on",
     "id": "<server id>"}

``time.monotonic()`` is one clock for every process of the machine, so the
bench lines these up with its own clock. The server id comes from the call's
arguments (a string id, ``spec.id``, ``report["server_id"]``...) or, inside
a call that had one, from a context variable. A function that is missing (the
code moved) is skipped and named in a ``missing`` line. Without the variable
this module does nothing. Nothing of tinystack changes; only the bench uses it
(and being first on the path, it shadows any other ``sitecustomize`` there).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import json
import os
import re
import threading
import time

_PATH = os.environ.get("TINYSTACK_BENCH_TRACE")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_server",
                                                                      default=None)
_lock = threading.Lock()
CONTEXT_ONLY = {"drv.boot_files", "cache.fetch", "host.qemu_img_create", "host.start_process"}
"""Calls whose arguments carry no server id: they get the one of the call around them."""

POINTS = [
    # (label, module, class or None, attribute)
    ("api.create", "tinystack.compute.servers", "Servers", "create"),
    ("api.build", "tinystack.compute.servers", "Servers", "build"),
    ("api.schedule", "tinystack.compute.servers", "Servers", "schedule"),
    ("api.allocate", "tinystack.compute.networking", "Networking", "allocate"),
    ("api.launch", "tinystack.compute.servers", "Servers", "launch"),
    ("api.send_spec", "tinystack.compute.service", "ComputeCore", "send_spec"),
    ("agent.receive", "tinystack.compute.agent", "ComputeAgent", "receive"),
    ("agent.sync", "tinystack.compute.agent", "ComputeAgent", "_sync"),
    ("agent.report", "tinystack.compute.agent", "ComputeAgent", "_report"),
    ("drv.inspect", "tinystack.compute.drivers.qemu", "QemuDriver", "inspect_server"),
    ("drv.ensure_server", "tinystack.compute.drivers.qemu", "QemuDriver", "ensure_server"),
    ("drv.root_disk", "tinystack.compute.drivers.qemu", "QemuDriver", "_make_root_disk"),
    ("drv.boot_files", "tinystack.compute.drivers.qemu", "QemuDriver", "_boot_files"),
    ("drv.power_on", "tinystack.compute.drivers.qemu", "QemuDriver", "power_on"),
    ("drv.argv", "tinystack.compute.drivers.qemu", "QemuDriver", "_argv"),
    ("drv.start", "tinystack.compute.drivers.qemu", "QemuDriver", "_start"),
    ("drv.wait_monitor", "tinystack.compute.drivers.qemu", "QemuDriver", "_wait_for_monitor"),
    ("drv.let_run", "tinystack.compute.drivers.qemu", "QemuDriver", "_let_run"),
    ("drv.remove", "tinystack.compute.drivers.qemu", "QemuDriver", "remove_server"),
    ("cache.fetch", "tinystack.compute.image_cache", "ImageCache", "fetch"),
    ("host.qemu_img_create", "tinystack.compute.host", None, "qemu_img_create"),
    ("host.start_process", "tinystack.compute.host", None, "start_process"),
    ("conductor.report", "tinystack.compute.conductor", "ConductorEndpoint", "report_server"),
    ("conductor.apply", "tinystack.compute.conductor", "ConductorEndpoint",
     "apply_server_report"),
]


def _write(record: dict) -> None:
    line = json.dumps(record) + "\n"
    with _lock, open(_PATH, "a") as out:
        out.write(line)


def _id_of(value) -> str | None:
    if isinstance(value, str):
        return value if _UUID.match(value) else None
    if isinstance(value, dict):
        return _id_of(value.get("server_id") or value.get("id"))
    for name in ("server_id", "id"):
        found = getattr(value, name, None)
        if isinstance(found, str) and _UUID.match(found):
            return found
    return None


def _server_of(args, kwargs) -> str | None:
    for value in (*args[1:], *kwargs.values()):
        found = _id_of(value)
        if found:
            return found
    return None


def _ids_of_result(result) -> list[str]:
    ids = getattr(result, "server_ids", None)
    return list(ids) if isinstance(ids, list | tuple) else []


def _wrap(label: str, fn, bound: bool):
    def ident(args, kwargs):
        if label in CONTEXT_ONLY:   # their arguments name an image, not a server
            return _current.get()
        rest = args[1:] if bound else args
        found = _server_of((None, *rest), kwargs)
        if found is None and rest and isinstance(rest[0], list):
            found = ",".join(a for a in rest[0] if isinstance(a, str))
        return found or _current.get()

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def traced(*args, **kwargs):
            server = ident(args, kwargs)
            token = _current.set(server)
            started = time.monotonic()
            result = None
            try:
                result = await fn(*args, **kwargs)
                return result
            finally:
                _current.reset(token)
                record = {"t": started, "end": time.monotonic(), "fn": label, "id": server}
                if label == "api.create":
                    record["ids"] = _ids_of_result(result)
                _write(record)
    else:
        @functools.wraps(fn)
        def traced(*args, **kwargs):
            server = ident(args, kwargs)
            token = _current.set(server)
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                _current.reset(token)
                _write({"t": started, "end": time.monotonic(), "fn": label, "id": server})
    traced.__bench_traced__ = True
    return traced


def install() -> None:
    missing = []
    for label, module_name, class_name, attribute in POINTS:
        try:
            module = importlib.import_module(module_name)
            owner = getattr(module, class_name) if class_name else module
            fn = getattr(owner, attribute)
        except (ImportError, AttributeError):
            missing.append(label)
            continue
        if getattr(fn, "__bench_traced__", False):
            continue
        setattr(owner, attribute, _wrap(label, fn, bound=class_name is not None))
    _write({"t": time.monotonic(), "fn": "installed", "pid": os.getpid(), "missing": missing})


if _PATH:
    try:
        install()
    except Exception as exc:  # the bench reads this; tinystack must start regardless
        _write({"t": time.monotonic(), "fn": "failed", "error": repr(exc)})
