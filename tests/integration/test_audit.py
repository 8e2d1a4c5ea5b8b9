"""The audit log (issue 13, CONTRACT.md audit_log): one JSON line per
decision, complete, without credentials, reopened on SIGUSR1."""
import json
import os
import signal
import time

from conftest import COURIER_KEY, Broker, metrics, mint, policy

DECIDE = policy('if req.user_id == "mallory" then return {allow=false, reason="blocked user"} end\n'
                'return { allow = true, tier = "inbox", expires_in = "1h", reason = "ok" }')


def audit_broker(tmp_path, double, inputs, name="audit.jsonl"):
    extra = 'audit_log = { file = "%s", inputs = %s }' % (name, "true" if inputs else "false")
    return Broker(tmp_path, double, policies={"default": DECIDE}, extra=extra)


def read_lines(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(l) for l in path.read_text().splitlines()]
            if len(lines) >= n:
                return lines
        time.sleep(0.02)
    raise AssertionError("expected %d audit lines, got %r" % (n, lines))


def test_one_complete_line_per_decision(tmp_path, double):
    b = audit_broker(tmp_path, double, inputs=False)
    try:
        ok = b.post(body={"user_id": "alice"}, token=mint(), headers={"X-Request-Id": "req-1"})
        assert ok.status == 200, ok.body
        assert b.post(body={"user_id": "mallory"}, token=mint(), headers={"X-Request-Id": "req-2"}).status == 403
        assert b.post(body={"user_id": "alice"}).status == 401  # no decision, no audit line
        lines = read_lines(tmp_path / "audit.jsonl", 2)
    finally:
        b.stop()
    assert len(lines) == 2, lines
    allow, deny = lines
    assert list(allow)[:3] == ["time", "event", "request_id"]
    assert allow["event"] == "decision" and allow["request_id"] == "req-1"
    assert allow["tenant"] == "default" and allow["policy_revision"]
    assert allow["user"] == "alice" and allow["auth"] == "jwt" and allow["subject"] == "alice"
    assert allow["decision"] == "allow" and allow["status"] == 200
    assert allow["scope"].startswith("user_id:alice ") and allow["expires_in"] == 3600
    assert deny["decision"] == "deny" and deny["reason"] == "blocked user" and deny["status"] == 403
    assert "scope" not in deny and deny["request_id"] == "req-2"
    assert "request" not in allow and "request" not in deny
    assert os.stat(tmp_path / "audit.jsonl").st_mode & 0o077 == 0


def test_inputs_without_credentials(tmp_path, double):
    b = audit_broker(tmp_path, double, inputs=True)
    jwt = mint(role="admin")
    try:
        r = b.post(body={"user_id": "alice", "scopes": ["inbox:read:messages"], "note": "a/b"}, token=jwt,
                   headers={"Cookie": "session=s3cr3t", "X-Custom": "hello", "Proxy-Authorization": "Basic eA=="})
        assert r.status == 200, r.body
        token = r.json()["token"]
        text = (tmp_path / "audit.jsonl").read_text() if read_lines(tmp_path / "audit.jsonl", 1) else ""
    finally:
        b.stop()
    line = json.loads(text.splitlines()[0])
    req = line["request"]
    assert req["user_id"] == "alice" and req["body"]["note"] == "a/b"
    assert req["body"]["scopes"] == ["inbox:read:messages"]
    assert req["identity"]["authenticated"] is True and req["identity"]["method"] == "jwt"
    assert req["identity"]["claims"]["role"] == "admin"
    assert req["client"]["ip"] == "127.0.0.1"
    assert req["headers"]["x-custom"] == "hello"
    for h in ("authorization", "cookie", "proxy-authorization"):
        assert h not in req["headers"]
    for secret in (jwt, "s3cr3t", "eA==", token, COURIER_KEY):
        assert secret not in text
    assert "\\/" not in text


def test_sigusr1_reopens_after_rename(tmp_path, double):
    b = audit_broker(tmp_path, double, inputs=False)
    path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    try:
        assert b.post(body={"user_id": "alice"}, token=mint(), headers={"X-Request-Id": "before"}).status == 200
        read_lines(path, 1)
        os.rename(path, rotated)
        b.p.proc.send_signal(signal.SIGUSR1)
        b.p.wait_for("audit log reopened")
        assert b.post(body={"user_id": "alice"}, token=mint(), headers={"X-Request-Id": "after"}).status == 200
        new = read_lines(path, 1)
        old = read_lines(rotated, 1)
        assert b.p.proc.poll() is None  # SIGUSR1 did not kill it
    finally:
        b.stop()
    assert [l["request_id"] for l in old] == ["before"]
    assert [l["request_id"] for l in new] == ["after"]


def test_failed_write_counted_and_logged(tmp_path, double):
    b = Broker(tmp_path, double, policies={"default": DECIDE},
               extra='audit_log = { file = "/dev/full" }')
    try:
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
        assert b.post(body={"user_id": "mallory"}, token=mint()).status == 403
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and metrics(b).get("broker_audit_write_failures_total", 0) < 2:
            time.sleep(0.02)
        assert metrics(b)["broker_audit_write_failures_total"] == 2
        b.p.wait_for("audit log: a line could not be written")
    finally:
        b.stop()


def test_unopenable_audit_log_refuses_start(tmp_path, double):
    import conftest
    import subprocess
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.lua").write_text(DECIDE)
    cfg = tmp_path / "c.lua"
    cfg.write_text('listen = "127.0.0.1:0"\naudit_log = { file = "no/such/dir/audit.jsonl" }\n'
                   'tenants = { default = { api_key = { env = "K" }, policy = "policies/default.lua", '
                   'auth = { none = true } } }\n')
    r = subprocess.run([conftest.BROKER_BIN, "serve", "-c", str(cfg)], env={"K": "x"},
                       capture_output=True, timeout=30)
    assert r.returncode == 1 and b"audit_log.file" in r.stderr, r.stderr


def test_reload_to_unopenable_audit_log_refused(tmp_path, double):
    from conftest import reload_failed
    b = audit_broker(tmp_path, double, inputs=False)
    try:
        b.config.write_text(b.config_text.replace('file = "audit.jsonl"', 'file = "no/such/dir/a.jsonl"'))
        reload_failed(b)
        b.p.wait_for("reload refused: audit_log.file")
        assert b.post(body={"user_id": "alice"}, token=mint(), headers={"X-Request-Id": "still"}).status == 200
        assert read_lines(tmp_path / "audit.jsonl", 1)[0]["request_id"] == "still"
    finally:
        b.stop()


def test_audit_lines_are_valid_utf8(tmp_path, double):
    b = audit_broker(tmp_path, double, inputs=True)
    try:
        assert b.post(body={"user_id": "alice"}, token=mint(), headers={"X-Raw": "h\xffh"}).status == 200
        read_lines(tmp_path / "audit.jsonl", 1)
    finally:
        b.stop()
    raw = (tmp_path / "audit.jsonl").read_bytes()
    line = json.loads(raw.decode("utf-8"))  # strict
    assert line["request"]["headers"]["x-raw"] == "h\ufffdh"
