#!/usr/bin/env python3
"""Identity benchmark: tinystack against the real OpenStack Keystone, side by side.

    python bench/identity/run.py                     # both, then the table
    python bench/identity/run.py --only keystone     # just the reference
    python bench/identity/run.py --only tinystack    # just tinystack

Each server is measured alone, one after the other, with the same load
generator.  See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BCRYPT_COST, REF_DIR, BenchError, SideResult, log  # noqa: E402
from loadgen import LoadGen  # noqa: E402
import scenarios  # noqa: E402

MB = 1_000_000
# Below this many completed requests a figure's p99 (and its rate) say little.
FEW_SAMPLES = 30
STARTUP_TARGET_S = 3.0
MEMORY_TARGET_MB = 150
# figure -> minimum tinystack/keystone requests-per-second ratio
RATE_TARGETS = {"password": 1.0, "rescope": 20.0, "validate": 20.0, "projects": 20.0}


# --------------------------------------------------------------------------- #
# Measuring one side
# --------------------------------------------------------------------------- #
def measure_load(side: SideResult, creds: dict, lg: LoadGen, args) -> None:
    fx = scenarios.prepare(creds, extra_projects=args.projects)
    side.info["projects_listed"] = fx.projects_listed
    reqs = scenarios.build_requests(creds, fx)
    for name in args.figures:
        req = reqs[name]
        scenarios.preflight(name, req)
        log(f"{side.name}: {scenarios.SCENARIOS[name][0]} ...")
        res = lg.measure(req)
        side.load[name] = res.as_dict()
        note = f", {res.errors} errors" if res.errors else ""
        log(f"{side.name}: {res.rps:.1f} req/s, p50 {res.p50_ms:.1f} ms, "
            f"p99 {res.p99_ms:.1f} ms ({res.requests} requests{note})")


def target_note(side: SideResult, text: str) -> str:
    """`` (target TEXT)`` for tinystack, whose figures the targets are about."""
    return f" (target {text})" if side.name == "tinystack" else ""


def idle_memory(side: SideResult, rss_fn, idle_s: float, when: str = "load") -> None:
    """RSS after ``idle_s`` of quiet: after the second start, or after the load figures."""
    time.sleep(idle_s)
    total, pids = rss_fn()
    if when == "start":
        side.start_rss_bytes = total
    else:
        side.idle_rss_bytes, side.idle_rss_pids = total, pids
    log(f"{side.name}: idle RSS after {when} {total / MB:.1f} MB over {len(pids)} process(es)"
        + target_note(side, f"< {MEMORY_TARGET_MB} MB"))


def run_keystone(args, lg: LoadGen) -> SideResult:
    from keystone_ref import ReferenceKeystone, versions
    side = SideResult("keystone")
    ks = ReferenceKeystone(port=args.keystone_port, workers=args.keystone_workers,
                           cache=args.keystone_cache, log=log)
    try:
        log("keystone: setting up (venv, db_sync, fernet_setup, credential_setup, bootstrap)")
        ks.setup()
        side.info.update(versions=versions(), workers=args.keystone_workers,
                         cache={"memory": "in-process dogpile.cache.memory"}.get(
                             args.keystone_cache, args.keystone_cache),
                         bcrypt_costs=sorted(ks.bcrypt_cost()), port=ks.port)
        side.startup_first_s = ks.start()
        log(f"keystone: first start healthy after {side.startup_first_s:.2f}s; restarting")
        ks.stop()
        side.startup_second_s = ks.start()
        log(f"keystone: second start healthy after {side.startup_second_s:.2f}s")
        idle_memory(side, ks.rss, args.idle, when="start")
        measure_load(side, ks.credentials(), lg, args)
        idle_memory(side, ks.rss, args.idle)
        side.ok = True
    except Exception as e:  # report and carry on with the other side
        side.error = f"{type(e).__name__}: {e}"
        if not isinstance(e, BenchError):
            side.error += "\n" + traceback.format_exc()
        log(f"keystone: FAILED: {side.error}")
    finally:
        ks.stop()
    return side


def run_tinystack(args, lg: LoadGen) -> SideResult:
    from tinystack_side import Tinystack
    side = SideResult("tinystack")
    ts = None
    try:
        ts = Tinystack(port=args.tinystack_port, log=log)
        side.info.update(version=ts.version(), port=ts.port)
        ts.reset()
        side.startup_first_s = ts.up()
        log(f"tinystack: first `up -d` took {side.startup_first_s:.2f}s; restarting")
        t0 = time.monotonic()
        ts.down()
        side.info["down_s"] = round(time.monotonic() - t0, 2)
        side.startup_second_s = ts.up()
        log(f"tinystack: second `up -d` took {side.startup_second_s:.2f}s"
            + target_note(side, f"< {STARTUP_TARGET_S:g} s"))
        idle_memory(side, ts.rss, args.idle, when="start")
        side.info["bcrypt_costs"] = sorted(ts.bcrypt_cost())
        measure_load(side, ts.credentials(), lg, args)
        idle_memory(side, ts.rss, args.idle)
        side.ok = True
    except Exception as e:
        side.error = f"{type(e).__name__}: {e}"
        if not isinstance(e, BenchError):
            side.error += "\n" + traceback.format_exc()
        log(f"tinystack: FAILED: {side.error}")
    finally:
        if ts is not None:
            try:
                ts.down()
            except Exception as e:
                log(f"tinystack: down failed: {e}")
    return side


# --------------------------------------------------------------------------- #
# The table
# --------------------------------------------------------------------------- #
def fmt(v, digits=1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}"


def build_rows(ks: SideResult | None, ts: SideResult | None, figures: list[str]) -> list[dict]:
    """One dict per table row: figure, unit, keystone, tinystack, ratio, target, verdict."""
    rows = []

    def load(side, name, key):
        if side is None or name not in side.load:
            return None
        return side.load[name][key]

    def errs(side, name):
        return bool(side and name in side.load and side.load[name]["errors"])

    ts_cost = (ts.info.get("bcrypt_costs") if ts else None) or []
    for i, name in enumerate(scenarios.SCENARIOS, 1):
        if name not in figures:
            continue
        label = f"{i} {scenarios.SCENARIOS[name][0]}"
        k, t = load(ks, name, "rps"), load(ts, name, "rps")
        need = RATE_TARGETS[name]
        ratio = (t / k) if (k and t is not None) else None
        verdict, note = "n/a", ""
        if ratio is not None:
            verdict = "PASS" if ratio >= need else "MISS"
        few = [f"{s.name} {s.load[name]['requests']}" for s in (ks, ts)
               if s and name in s.load and s.load[name].get("requests", FEW_SAMPLES) < FEW_SAMPLES]
        if few:
            note = f"few samples ({', '.join(few)} requests): rerun longer or on a quieter machine"
        if errs(ks, name) or errs(ts, name):
            verdict, note = "ERR", "errors during load"
        if name == "password" and ts is not None and ts.ok:
            if ts_cost and ts_cost != [BCRYPT_COST]:
                verdict, note = "MISS", f"tinystack bcrypt cost {ts_cost} != {BCRYPT_COST}"
            elif not ts_cost and verdict in ("PASS", "MISS"):
                note = (note + "; " if note else "") + \
                    f"tinystack bcrypt cost not found on disk (assumed {BCRYPT_COST})"
        target = (f">= {need:g}x Keystone" if name != "password"
                  else f">= Keystone, bcrypt {BCRYPT_COST} both")
        rows.append(dict(figure=label, unit="req/s", keystone=fmt(k), tinystack=fmt(t),
                         ratio=(f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.1f}x")
                         if ratio is not None else "-",
                         target=target, verdict=verdict, note=note))
        for key, unit in (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")):
            rows.append(dict(figure="", unit=unit, keystone=fmt(load(ks, name, key)),
                             tinystack=fmt(load(ts, name, key)), ratio="", target="",
                             verdict="", note=""))

    def absolute(label, unit, kv, tv, ok, target, digits):
        verdict = "n/a" if tv is None else ("PASS" if ok(tv) else "MISS")
        rows.append(dict(figure=label, unit=unit, keystone=fmt(kv, digits),
                         tinystack=fmt(tv, digits), ratio="", target=target,
                         verdict=verdict, note=""))

    absolute("5 up -> healthy, 2nd start", "s", ks and ks.startup_second_s,
             ts and ts.startup_second_s, lambda v: v < STARTUP_TARGET_S,
             f"tinystack < {STARTUP_TARGET_S:g} s", 2)
    rows.append(dict(figure="", unit="1st start s", keystone=fmt(ks and ks.startup_first_s, 2),
                     tinystack=fmt(ts and ts.startup_first_s, 2), ratio="", target="",
                     verdict="", note=""))
    kmem = ks.idle_rss_bytes / MB if ks and ks.idle_rss_bytes else None
    tmem = ts.idle_rss_bytes / MB if ts and ts.idle_rss_bytes else None
    absolute("6 idle RSS after warm-up", "MB", kmem, tmem, lambda v: v < MEMORY_TARGET_MB,
             f"tinystack < {MEMORY_TARGET_MB} MB", 1)
    kstart = ks.start_rss_bytes / MB if ks and ks.start_rss_bytes else None
    tstart = ts.start_rss_bytes / MB if ts and ts.start_rss_bytes else None
    if kstart is not None or tstart is not None:
        rows.append(dict(figure="", unit="after start MB", keystone=fmt(kstart),
                         tinystack=fmt(tstart), ratio="",
                         target=f"tinystack < {MEMORY_TARGET_MB} MB",
                         verdict="n/a" if tstart is None else
                         ("PASS" if tstart < MEMORY_TARGET_MB else "MISS"), note=""))
    return rows


COLUMNS = [("figure", "figure", "<"), ("unit", "", "<"), ("keystone", "Keystone", ">"),
           ("tinystack", "tinystack", ">"), ("ratio", "ts/ks", ">"),
           ("target", "target", "<"), ("verdict", "", "<")]


def render_text(rows: list[dict]) -> str:
    widths = {k: max(len(h), *(len(r[k]) for r in rows)) for k, h, _ in COLUMNS}
    line = lambda vals: "  ".join(f"{v:{a}{widths[k]}}" for (k, _, a), v in zip(COLUMNS, vals))
    out = [line([h for _, h, _ in COLUMNS]), "  ".join("-" * widths[k] for k, _, _ in COLUMNS)]
    for r in rows:
        out.append(line([r[k] for k, _, _ in COLUMNS]).rstrip())
    notes = [f"  note ({r['figure'].strip() or r['unit']}): {r['note']}" for r in rows if r["note"]]
    return "\n".join(out + notes)


def render_markdown(rows: list[dict]) -> str:
    head = "| figure | | Keystone | tinystack | ts/ks | target | |"
    sep = "|---|---|---:|---:|---:|---|---|"
    body = [f"| {r['figure']} | {r['unit']} | {r['keystone']} | {r['tinystack']} | "
            f"{r['ratio']} | {r['target']} | {r['verdict']} |" for r in rows]
    return "\n".join([head, sep, *body])


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}"


def header(args, lg: LoadGen, ks: SideResult | None, ts: SideResult | None) -> str:
    lines = [f"identity benchmark, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"machine:   {machine()}",
             f"load:      {lg.describe()}, each server alone"]
    if ks:
        v = ks.info.get("versions", {})
        lines.append(
            f"Keystone:  {v.get('keystone', '?')} on Python {v.get('python', '?')}, gunicorn "
            f"{v.get('gunicorn', '?')} {ks.info.get('workers')} sync workers, SQLite, Fernet, "
            f"bcrypt cost {ks.info.get('bcrypt_costs') or '?'} (configured "
            f"{BCRYPT_COST}), cache {ks.info.get('cache')}")
    if ts:
        lines.append(f"tinystack: {ts.info.get('version', '?')}, one process, bcrypt cost "
                     f"{ts.info.get('bcrypt_costs') or 'not found on disk'} "
                     f"(expected {BCRYPT_COST})")
    for s in (ks, ts):
        if s and "projects_listed" in s.info:
            lines.append(f"{s.name}: {s.info['projects_listed']} projects in the listing")
    if args.loadavg > 1.0:
        lines.append(f"WARNING: the machine was busy when the run began (1-min load average "
                     f"{args.loadavg:.1f} on {os.cpu_count()} cores); figures are depressed "
                     f"and noisy, rerun on a quiet machine")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["keystone", "tinystack"],
                    help="measure one side only (ratios and relative targets show n/a)")
    ap.add_argument("--figures", default=",".join(scenarios.SCENARIOS),
                    help="comma-separated subset of load figures: %(default)s")
    ap.add_argument("--duration", type=float, default=10, help="seconds per load figure")
    ap.add_argument("--warmup", type=float, default=2,
                    help="seconds of discarded load before each figure")
    ap.add_argument("--concurrency", type=int, default=8, help="open connections")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                    help="auto: wrk, installing it with apt-get when missing and allowed, "
                         "else the built-in asyncio client")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    ap.add_argument("--idle", type=float, default=3,
                    help="seconds of quiet after the second start, and after the load, "
                         "before reading RSS")
    ap.add_argument("--projects", type=int, default=10,
                    help="extra projects created on each side before listing")
    ap.add_argument("--keystone-port", type=int, default=None)
    ap.add_argument("--keystone-workers", type=int, default=2)
    ap.add_argument("--keystone-cache", choices=["memory", "off"], default="memory",
                    help="Keystone's cache: oslo.cache's in-process dogpile.cache.memory "
                         "(default), or off as in the install guide (then Keystone "
                         "validates a token or two per second)")
    ap.add_argument("--tinystack-port", type=int, default=None)
    ap.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    ap.add_argument("--strict", action="store_true", help="exit 2 if any target is missed")
    args = ap.parse_args(argv)
    args.figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = set(args.figures) - set(scenarios.SCENARIOS)
    if unknown:
        ap.error(f"unknown figure(s): {', '.join(sorted(unknown))}")

    args.loadavg = os.getloadavg()[0]
    REF_DIR.mkdir(parents=True, exist_ok=True)
    wrk_log = REF_DIR / "loadgen.log"
    wrk_log.write_text("")
    try:
        lg = LoadGen(kind=args.loadgen,
                     duration_s=args.duration, warmup_s=args.warmup,
                     connections=args.concurrency, threads=args.threads,
                     allow_install=not args.no_install, log_path=str(wrk_log), log=log)
    except BenchError as e:
        log(str(e))
        return 1

    ks = run_keystone(args, lg) if args.only in (None, "keystone") else None
    ts = run_tinystack(args, lg) if args.only in (None, "tinystack") else None

    rows = build_rows(ks, ts, args.figures)
    print()
    print(header(args, lg, ks, ts))
    print()
    print(render_text(rows))
    for s in (ks, ts):
        if s and not s.ok:
            print(f"\n{s.name} FAILED: {s.error}")
    if args.markdown:
        print()
        print(render_markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "when": dt.datetime.now(dt.timezone.utc).isoformat(), "machine": machine(),
            "loadavg_at_start": args.loadavg,
            "loadgen": lg.describe(), "keystone": asdict(ks) if ks else None,
            "tinystack": asdict(ts) if ts else None, "rows": rows}, indent=2))

    if any(s and not s.ok for s in (ks, ts)):
        return 1
    if args.strict and any(r["verdict"] in ("MISS", "ERR") for r in rows):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
