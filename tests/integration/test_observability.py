"""Observability (issue 13): request ids, trace ids, log levels and field
order, start and reload lines, and metrics that promtool accepts."""
import json
import re
import shutil
import subprocess

import pytest

from conftest import Broker, mint, policy, reload_ok, request, wait_token_lines

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_client_request_id_echoed_and_logged(tmp_path, double):
    b = Broker(tmp_path, double)
    try:
        r = b.post(body={"user_id": "alice"}, token=mint(),
                   headers={"X-Request-Id": "abc-123.X_y", "traceparent": TRACEPARENT})
        assert r.status == 200, r.body
        assert r.header("X-Request-Id") == "abc-123.X_y"
        line = wait_token_lines(b, 1)[0]
        assert line["request_id"] == "abc-123.X_y"
        assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    finally:
        b.stop()


@pytest.mark.parametrize("sent", ["", "a b", "x" * 129, "évil", "a/b", "a\tb"])
def test_insane_request_id_replaced(tmp_path, double, sent):
    b = Broker(tmp_path, double)
    try:
        r = b.post(body={"user_id": "alice"}, token=mint(), headers={"X-Request-Id": sent})
        assert r.status == 200, r.body
        rid = r.header("X-Request-Id")
        assert rid and rid != sent and re.fullmatch(r"[0-9a-f]{32}", rid), rid
        assert wait_token_lines(b, 1)[0]["request_id"] == rid
    finally:
        b.stop()


def test_every_answer_has_a_request_id(tmp_path, double):
    b = Broker(tmp_path, double)
    try:
        ids = set()
        for path in ("/healthz", "/readyz", "/metrics", "/nope"):
            rid = b.get(path).header("X-Request-Id")
            assert rid, path
            ids.add(rid)
        for r in (b.post(body={"user_id": "alice"}),  # 401
                  b.post(path="/v1/tenants/none/token", body={"user_id": "a"}),  # 404
                  request(b.port, "GET", "/v1/token")):  # 405
            assert r.header("X-Request-Id"), r.status
            ids.add(r.header("X-Request-Id"))
        assert len(ids) == 7  # new ones are not reused
    finally:
        b.stop()


def test_generated_request_ids_never_repeat(tmp_path, double):
    """Ids come from a per-thread pool of random bytes refilled every 64 ids:
    200 answers cross several refills on each loop, and no id repeats or is
    all zeros (a pool handed out twice, or never filled)."""
    b = Broker(tmp_path, double)
    try:
        ids = [b.get("/healthz").header("X-Request-Id") for _ in range(200)]
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids[:3]
        assert len(set(ids)) == 200
        assert "0" * 32 not in ids
    finally:
        b.stop()


def test_bad_traceparent_not_logged(tmp_path, double):
    b = Broker(tmp_path, double)
    try:
        for tp in ("00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                   "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                   "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "garbage"):
            assert b.post(body={"user_id": "alice"}, token=mint(),
                          headers={"traceparent": tp}).status == 200
        lines = wait_token_lines(b, 4)
        assert all("trace_id" not in l for l in lines), lines
    finally:
        b.stop()


def raw_lines(b):
    return [l for l in b.p.text().splitlines() if l.startswith("{")]


def test_field_order_levels_and_no_escaped_slash(tmp_path, double):
    b = Broker(tmp_path, double, policies={"default": policy(
        'broker.log("see https://example.com/x")\nreturn { allow = true, tier = "inbox", expires_in = "1h" }')})
    try:
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
        double.configure(status=500)
        assert b.post(body={"user_id": "bob"}, token=mint("bob")).status == 502
        wait_token_lines(b, 2)
    finally:
        b.stop()
    lines = [l for l in raw_lines(b) if '"token_request"' in l]
    assert len(lines) == 2
    for text in raw_lines(b):
        assert "\\/" not in text, text
        keys = list(json.loads(text).keys())
        assert keys[:2] == ["time", "level"], keys
        assert keys[2] in ("event", "msg"), keys
    assert "https://example.com/x" in lines[0]
    first, second = (json.loads(l) for l in lines)
    assert first["level"] == "info" and second["level"] == "error"
    assert list(first.keys())[:5] == ["time", "level", "event", "request_id", "tenant"]
    # The same fields come in the same order on every line.
    common = [k for k in first if k in second]
    assert common == [k for k in second if k in first]


def test_log_level_warn_hides_info(tmp_path, double):
    b = Broker(tmp_path, double, extra='log_level = "warn"')
    try:
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
        double.configure(status=500)
        assert b.post(body={"user_id": "bob"}, token=mint("bob")).status == 502
        wait_token_lines(b, 1)
    finally:
        b.stop()
    # The start line is written whatever the level: supervisors wait for it.
    levels = [l["level"] for l in b.p.json_lines() if l.get("event") != "start"]
    assert "info" not in levels and "error" in levels, b.p.text()


def test_bad_log_level_refused(tmp_path):
    cfg = tmp_path / "c.lua"
    cfg.write_text('log_level = "loud"\ntenants = { default = { api_key = { env = "K" }, '
                   'policy = "p.lua", auth = { none = true } } }\n')
    (tmp_path / "p.lua").write_text("return function() return {allow=false} end\n")
    import conftest
    r = subprocess.run([conftest.BROKER_BIN, "check", "-c", str(cfg)], env={"K": "x"},
                       capture_output=True, timeout=30)
    assert r.returncode == 1 and b"log_level" in r.stderr, r.stderr


def test_start_and_reload_lines_name_tenants(tmp_path, double):
    # acme has an upstream of its own: the line names the one in force for each.
    b = Broker(tmp_path, double, tenants={"default": {}, "acme": {
        "policy": "default", "extra": 'courier = { base_url = "http://127.0.0.1:9" },'}})
    try:
        start = [l for l in b.p.json_lines() if l.get("event") == "start"]
        assert len(start) == 1, b.p.text()
        s = start[0]
        assert "listening on" in s["msg"] and s["courier_url"].startswith(double.url)
        names = {t["name"]: t for t in s["tenants"]}
        assert set(names) == {"default", "acme"}
        assert all(t["policy_revision"] for t in names.values())
        assert names["default"]["courier_url"] == s["courier_url"]
        assert names["acme"]["courier_url"].startswith("http://127.0.0.1:9/")
        reload_ok(b)
        rel = [l for l in b.p.json_lines() if l.get("event") == "reload"]
        assert len(rel) == 1 and {t["name"] for t in rel[0]["tenants"]} == {"default", "acme"}
        assert rel[0]["generation"] == s["generation"] + 1
    finally:
        b.stop()


def metric_lines(text, name):
    return [l for l in text.splitlines() if l.startswith(name)]


def test_metrics_histograms_decisions_build_info(tmp_path, double):
    deny = policy('if req.user_id == "mallory" then return {allow=false, reason="no"} end\n'
                  'if req.user_id == "err" then error("boom") end\n'
                  'return { allow = true, tier = "inbox", expires_in = "1h" }')
    b = Broker(tmp_path, double, policies={"default": deny})
    try:
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
        assert b.post(body={"user_id": "mallory"}, token=mint()).status == 403
        assert b.post(body={"user_id": "err"}, token=mint()).status == 500
        text = b.get("/metrics").body.decode()
    finally:
        b.stop()
    for outcome in ("allow", "deny", "error"):
        assert 'broker_decisions_total{tenant="default",outcome="%s"} 1' % outcome in text, text
    assert re.search(r'^broker_build_info\{version="[^"]+"\} 1$', text, re.M), text
    assert 'broker_request_duration_seconds_count{route="token",class="2xx"} 1' in text
    assert 'broker_request_duration_seconds_count{route="token",class="4xx"} 1' in text
    assert 'broker_request_duration_seconds_count{route="token",class="5xx"} 1' in text
    assert metric_lines(text, 'broker_upstream_seconds_bucket{le="+Inf"} 1')
    assert metric_lines(text, "broker_generation ")
    assert metric_lines(text, 'broker_reloads_total{result="ok"}')


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_metrics(tmp_path, double):
    b = Broker(tmp_path, double)
    try:
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
        assert b.post(body={"user_id": "alice"}).status == 401
        text = b.get("/metrics").body
    finally:
        b.stop()
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
    # promtool exits 3 for lint warnings only (naming advice), 1 for errors.
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
