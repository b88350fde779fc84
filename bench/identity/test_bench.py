"""Self-checks of the benchmark's own parsing and verdicts (no servers needed).

    .venv/bin/python -m pytest bench/identity/test_bench.py -q
"""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

import run  # noqa: E402
from common import BenchError, SideResult, assert_loopback  # noqa: E402
from loadgen import Request, parse_wrk, wrk_script  # noqa: E402
from tinystack_side import parse_openrc, v3_url  # noqa: E402

WRK_OUT = """\
Running 8s test @ http://127.0.0.1:5000/v3/auth/tokens
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.29s   120.00ms   1.70s    70.00%
    Req/Sec     3.10      1.20     6.00     80.00%
  Latency Distribution
     50%    1.28s
     75%    1.35s
     90%    1.45s
     99%  950.12ms
  49 requests in 8.02s, 200.53KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:      6.11
Transfer/sec:     25.03KB
"""


def test_parse_wrk():
    r = parse_wrk(WRK_OUT, 8)
    assert r.requests == 49 and r.rps == 6.11
    assert r.p50_ms == 1280.0 and r.p99_ms == pytest.approx(950.12)
    assert r.mean_ms == 1290.0 and r.duration_s == pytest.approx(8.02)
    assert r.non_2xx == 4 and r.socket_errors == 3 and r.errors == 7


def test_parse_wrk_microseconds_and_no_requests():
    r = parse_wrk(WRK_OUT.replace("1.28s", "812.00us"), 8)
    assert r.p50_ms == pytest.approx(0.812)
    empty = parse_wrk("  0 requests in 3.01s, 0.00B read\nRequests/sec:      0.00\n"
                      "     50%    0.00us\n     99%    0.00us\n", 3)
    assert empty.rps == 0 and math.isnan(empty.p50_ms)


def test_parse_wrk_garbage():
    with pytest.raises(BenchError):
        parse_wrk("script.lua:3: unexpected symbol", 8)


def test_wrk_script_escapes():
    s = wrk_script(Request("POST", "http://127.0.0.1/x", {"X-A": 'q"b\\'},
                           '{"p":"]]é"}'.encode()))
    assert 'wrk.method = "POST"' in s
    assert '\\034' in s and '\\092' in s and '\\195\\169' in s
    assert '"' not in s.split("wrk.body = ")[1].split("\n")[0][1:-1]


def test_parse_openrc():
    text = ("# comment\nexport OS_AUTH_URL=http://127.0.0.1:8080/identity\n"
            "export OS_USERNAME=admin OS_PASSWORD='a b$c'\n"
            'export OS_PROJECT_NAME="admin"\nOS_IDENTITY_API_VERSION=3\n')
    env = parse_openrc(text)
    assert env["OS_AUTH_URL"] == "http://127.0.0.1:8080/identity"
    assert env["OS_PASSWORD"] == "a b$c" and env["OS_PROJECT_NAME"] == "admin"
    assert env["OS_IDENTITY_API_VERSION"] == "3"
    assert v3_url(env["OS_AUTH_URL"]) == "http://127.0.0.1:8080/identity/v3"
    assert v3_url("http://127.0.0.1:1/identity/v3/") == "http://127.0.0.1:1/identity/v3"


def test_loopback_only():
    assert_loopback("http://127.0.0.1:1/")
    assert_loopback("http://127.3.2.1:1/")
    assert_loopback("http://localhost:1/")
    assert_loopback("http://[::1]:1/")
    for bad in ("http://10.0.0.1/", "http://example.org/", "http://192.168.1.2/"):
        with pytest.raises(BenchError):
            assert_loopback(bad)


def _side(name, rps, startup, rss_mb, costs=(12,)):
    s = SideResult(name, ok=True)
    for fig, v in rps.items():
        s.load[fig] = dict(rps=v, p50_ms=1.0, p99_ms=2.0, errors=0)
    s.startup_second_s = startup
    s.idle_rss_bytes = int(rss_mb * run.MB)
    s.info["bcrypt_costs"] = list(costs)
    return s


def test_verdicts():
    ks = _side("keystone", dict(password=6, rescope=30, validate=35, projects=25), 7.0, 300)
    ts = _side("tinystack", dict(password=6.5, rescope=700, validate=800, projects=400),
               1.2, 120)
    rows = {r["figure"]: r for r in run.build_rows(ks, ts, list(run.scenarios.SCENARIOS))
            if r["figure"]}
    v = {k.split(" ", 1)[1]: r["verdict"] for k, r in rows.items()}
    assert v["password token issue"] == "PASS"
    assert v["token re-scope (token method)"] == "PASS"     # 23.3x
    assert v["token validation"] == "PASS"                  # 22.9x
    assert v["project listing (admin)"] == "MISS"           # 16x
    assert v["up -> healthy, 2nd start"] == "PASS"
    assert v["idle RSS after warm-up"] == "PASS"


def test_verdict_unequal_bcrypt_cost_and_errors():
    ks = _side("keystone", dict(password=6), 7.0, 300)
    ts = _side("tinystack", dict(password=60), 4.0, 200, costs=(10,))
    ts.load["password"]["errors"] = 0
    rows = [r for r in run.build_rows(ks, ts, ["password"]) if r["figure"]]
    assert rows[0]["verdict"] == "MISS" and "cost" in rows[0]["note"]
    assert rows[1]["verdict"] == "MISS" and rows[2]["verdict"] == "MISS"
    ts.info["bcrypt_costs"] = [12]
    ts.load["password"]["errors"] = 3
    rows = [r for r in run.build_rows(ks, ts, ["password"]) if r["figure"]]
    assert rows[0]["verdict"] == "ERR"


def test_one_side_only_is_na():
    ks = _side("keystone", dict(validate=35), 7.0, 300)
    rows = [r for r in run.build_rows(ks, None, ["validate"]) if r["figure"]]
    assert [r["verdict"] for r in rows] == ["n/a", "n/a", "n/a"]
    assert "Keystone" in run.render_text(rows) and "| n/a |" in run.render_markdown(rows)


def test_idle_rss_after_start_has_its_own_verdict():
    ts = _side("tinystack", dict(validate=800), 1.2, 140)
    ts.start_rss_bytes = int(151 * run.MB)
    rows = run.build_rows(None, ts, ["validate"])
    (after_start,) = [r for r in rows if r["unit"] == "after start MB"]
    assert after_start["tinystack"] == "151.0" and after_start["verdict"] == "MISS"
    assert "150 MB" in after_start["target"]
    ts.start_rss_bytes = int(110 * run.MB)
    (after_start,) = [r for r in run.build_rows(None, ts, ["validate"])
                      if r["unit"] == "after start MB"]
    assert after_start["verdict"] == "PASS"
