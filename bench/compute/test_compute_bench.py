"""Self-checks of the compute benchmark's parsing, rewriting and tracing (no servers, no qemu).

    .venv/bin/python -m pytest bench/compute/test_compute_bench.py -q
"""

import asyncio
import importlib.util
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    """Load by path under a name of its own (bench/identity has a ``run`` module too)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load("compute_bench_run", HERE / "run.py")
hook = _load("compute_bench_tracehook", HERE / "tracehook" / "sitecustomize.py")

CONSOLE = """\
[    0.000000] Linux version 6.1.0-56-cloud-amd64
tinystack-guest: no network interface
tinystack-guest ssh-host-key: ssh-ed25519 AAAAC3Nz
tinystack-guest ready: hostname=bench-03 addresses=none uptime=3.52
root@bench-03:~#
"""

SMAPS = """\
561a93ec5000-561a942cc000 r--p 00000000 fe:00 2171097    /usr/bin/qemu-system-x86_64
Size:               4124 kB
Rss:                4124 kB
561aa5d64000-561aa6fba000 rw-p 00000000 00:00 0          [heap]
Size:              18776 kB
Rss:                4720 kB
7f49dfe00000-7f49ebe00000 rw-p 00000000 00:00 0
Size:             196608 kB
Rss:              102400 kB
7f49f1e7d000-7f49f2c00000 rw-p 00000000 00:00 0
Size:              13836 kB
Rss:               13836 kB
7f4a00600000-7f4a025ff000 rwxp 00000000 00:00 0
Size:              32764 kB
Rss:               32764 kB
7f4a10000000-7f4a10100000 r-xp 00000000 fe:00 42         /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1024 kB
Rss:                 900 kB
"""

ARGV = [
    "qemu-system-x86_64", "-name", "guest=tinystack-abc,process=tinystack-vm,debug-threads=on",
    "-pidfile", "/data/compute/instances/abc/qemu.pid", "-nodefaults", "-no-user-config",
    "-display", "none", "-vga", "none", "-S", "-machine", "pc", "-accel", "tcg,tb-size=32",
    "-smp", "1", "-m", "192M",
    "-chardev", "socket,id=qmp,path=qmp.sock,server=on,wait=off",
    "-mon", "chardev=qmp,mode=control",
    "-chardev", "socket,id=console,path=console.sock,server=on,wait=off,"
                "logfile=/data/compute/instances/abc/console.log,logappend=on",
    "-serial", "chardev:console",
    "-drive", "file=/data/compute/instances/abc/disk,format=qcow2,if=none,id=root,discard=unmap",
    "-device", "virtio-blk-pci,drive=root,serial=root,bootindex=1",
    "-drive", "file=/data/compute/instances/abc/disk.config,format=raw,if=none,id=config,"
              "readonly=on",
    "-device", "virtio-blk-pci,drive=config,serial=config-2",
    "-netdev", "tap,id=net0,ifname=tapabc,script=no,downscript=no",
    "-device", "virtio-net-pci,netdev=net0,mac=fa:16:3e:00:00:01",
    "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
    "-device", "virtio-rng-pci",
    "-kernel", "/data/compute/images/k", "-append", "root=/dev/vda console=ttyS0",
    "-initrd", "/data/compute/images/r",
]


def test_parse_ready():
    assert bench.parse_ready(CONSOLE) == {"hostname": "bench-03", "addresses": "none",
                                          "uptime": 3.52}
    assert bench.parse_ready(CONSOLE.replace("ready:", "busy:")) is None


def test_parse_smaps_splits_guest_ram_from_qemu():
    m = bench.parse_smaps(SMAPS, guest_ram_kib=192 * 1024, tb_kib=32 * 1024)
    assert m["found_ram_block"]
    assert m["rss"] == 4124 + 4720 + 102400 + 13836 + 32764 + 900
    assert m["guest_ram"] == 102400
    assert m["own"] == m["rss"] - 102400
    assert m["tcg_cache"] == 32764          # the anonymous rwx mapping, not libc's r-x
    assert m["file"] == 4124 + 900


def test_parse_smaps_without_a_ram_block():
    m = bench.parse_smaps(SMAPS, guest_ram_kib=1024 * 1024)
    assert not m["found_ram_block"] and m["guest_ram"] == 0 and m["own"] == m["rss"]


def test_tb_size_of():
    assert bench.tb_size_of(ARGV) == 32
    assert bench.tb_size_of(["-accel", "tcg"]) is None


def test_reference_argv_same_guest_by_hand(tmp_path):
    out = bench.reference_argv(ARGV, tmp_path, paused=False, plain=False)
    assert "-S" not in out
    assert out[out.index("-pidfile") + 1] == str(tmp_path / "qemu.pid")
    assert f"file,id=console,path={tmp_path / 'console.log'}" in out
    assert f"file={tmp_path / 'disk'},format=qcow2,if=none,id=root" in out
    joined = " ".join(out)
    assert "id=config" not in joined and "netdev" not in joined and "virtio-net" not in joined
    assert "tcg,tb-size=32" in out and "free-page-reporting=on" in joined
    assert "/data/" not in joined.replace("/data/compute/images/", "")  # kernel stays shared
    assert out[-6:] == ARGV[-6:]


def test_reference_argv_plain_and_paused(tmp_path):
    out = bench.reference_argv(ARGV, tmp_path, paused=True, plain=True)
    assert "-S" in out
    assert out[out.index("-accel") + 1] == "tcg"
    assert "virtio-balloon-pci,id=balloon0" in out


def test_server_body():
    assert bench.server_body("a", "img", "42", "none") == {
        "name": "a", "imageRef": "img", "flavorRef": "42", "networks": "none"}
    many = bench.server_body("a", "img", "42", "auto", count=10)
    assert many["min_count"] == many["max_count"] == 10 and many["return_reservation_id"]


def test_breakdown_lines_up_trace_and_client():
    sid = "0c8f2f7e-1b0a-4d6e-9a55-4b7c2b0d0a11"
    records = [
        {"t": 0, "fn": "installed", "missing": ["drv.argv"]},
        {"t": 100.001, "end": 100.020, "fn": "api.create", "id": None, "ids": [sid]},
        {"t": 100.025, "end": 100.030, "fn": "api.schedule", "id": sid},
        {"t": 100.031, "end": 100.032, "fn": "api.send_spec", "id": sid},
        {"t": 100.040, "end": 100.200, "fn": "drv.power_on", "id": sid},
        {"t": 100.050, "end": 100.060, "fn": "drv.start", "id": sid},
        {"t": 100.050, "end": 100.110, "fn": "drv.wait_monitor", "id": sid},
        {"t": 100.210, "end": 100.211, "fn": "agent.report", "id": sid},
        {"t": 100.212, "end": 100.220, "fn": "conductor.apply", "id": sid},
        {"t": 105.0, "end": 105.5, "fn": "drv.power_on", "id": sid},   # a later call: ignored
    ]
    boot = bench.Boot(id=sid, t0=100.0, active_at=100.25)
    out = bench.breakdown(records, [boot])
    ms = out["median_ms"]
    assert math.isclose(ms["POST -> API create starts"], 1, abs_tol=1e-6)
    assert math.isclose(ms["API create (checks, rows) -> 202"], 19, abs_tol=1e-6)
    assert math.isclose(ms["exec qemu -> QMP answers"], 60, abs_tol=1e-6)
    assert math.isclose(ms["power_on total"], 160, abs_tol=1e-6)
    assert math.isclose(ms["applied -> client sees ACTIVE"], 30, abs_tol=1e-6)
    assert math.isnan(ms["root disk (cache + qemu-img create)"])
    assert out["missing"] == ["drv.argv"]


def test_trace_hook_records_server_ids(tmp_path, monkeypatch):
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setattr(hook, "_PATH", str(trace))
    sid = "0c8f2f7e-1b0a-4d6e-9a55-4b7c2b0d0a11"
    image = "5d3b1c2a-0000-4000-8000-000000000000"

    class Spec:
        id = sid

    class Ref:
        id = image

    async def fetch(self, ref):
        return ref.id

    async def power_on(self, spec):
        return await traced_fetch(self, Ref())

    traced_fetch = hook._wrap("cache.fetch", fetch, bound=True)
    traced_power_on = hook._wrap("drv.power_on", power_on, bound=True)
    assert asyncio.run(traced_power_on(object(), Spec())) == image
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(r["fn"], r["id"]) for r in lines] == [("cache.fetch", sid), ("drv.power_on", sid)]
    assert all(r["end"] >= r["t"] for r in lines)


def test_table_renders(tmp_path):
    boots = [bench.Boot(id=str(n), active_s=0.2 + n / 100, ready_s=4.0 + n / 10, uptime_s=3.5,
                        memory={"rss": 192.0, "own": 92.0, "guest_ram": 100.0,
                                "tcg_cache": 32.0, "file": 30.0}) for n in range(3)]
    r = bench.Results(flavor={"id": "42", "name": "m1.nano", "ram": 192, "vcpus": 1,
                              "disk": 1}, warmup={"active_s": 0.7, "ready_s": 4.5},
                      boots=boots, load={"at_start": 0.5, "samples": [0.4, 0.9],
                                         "at_end": 0.8})
    text = bench.table(r)
    assert "1 POST -> ACTIVE" in text and "met" in text and "0.40-0.90 during" in text
    r.trace = bench.breakdown([], boots)
    text = bench.table(r)
    assert "where POST -> ACTIVE goes" in text and "(not on this path)" in text
