"""The docs/policies.md walkthrough ("From a blank file to a shadowed,
replayed, reloaded policy"), step by step, on its own files
(examples/policy-walkthrough/): if a step of the doc stops working, this
fails. Every wait is bounded."""
import json
import os
import re
import shutil
import subprocess
import time

import jwt as pyjwt

from conftest import APP_SECRET, BROKER_BIN, COURIER_KEY, ROOT, Process, request

WALK = os.path.join(ROOT, "examples", "policy-walkthrough")
TIMEOUT = 60
THEN = 1795422600  # the doc's captured request: 2026-11-23 09:30 CET


def env(secrets=True, double=None):
    e = dict(os.environ)
    e.pop("COURIER_BASE_URL", None)
    e.pop("COURIER_API_KEY", None)
    e.pop("APP_JWT_SECRET", None)
    if secrets:
        e.update({"COURIER_API_KEY": COURIER_KEY, "APP_JWT_SECRET": APP_SECRET})
    if double:
        e["COURIER_BASE_URL"] = double.url
    return e


def broker(d, *args, secrets=True):
    p = subprocess.run([BROKER_BIN] + [str(a) for a in args], cwd=d, env=env(secrets),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    p.out, p.err = p.stdout.decode(), p.stderr.decode()
    return p


def token(sub, role=None, now=None):
    now = now or int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + 600}
    if role:
        claims["role"] = role
    return pyjwt.encode(claims, APP_SECRET, algorithm="HS256")


def ask(port, sub, user, role=None):
    return request(port, "POST", "/v1/tenants/acme/token", {"user_id": user},
                   {"Authorization": "Bearer " + token(sub, role)})


def metric(port, name):
    for line in request(port, "GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0


def until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pred()


def test_the_walkthrough_works_as_written(tmp_path, double):
    d = tmp_path / "walk"
    shutil.copytree(WALK, d)
    conf = d / "broker.conf.lua"

    # 1-2. The policy and its tests (fixtures from a file beside them), at full coverage.
    p = broker(d, "test", "--coverage", "--threshold", "100", "--branch-threshold", "100", "policies/")
    assert p.returncode == 0, p.out + p.err
    assert p.out.strip().splitlines()[-1] == "12 passed, 0 failed", p.out
    assert "acme.lua: 100% (21/21 lines)" in p.out and "acme.lua: 100% (10/10 branches)" in p.out, p.out
    p = broker(d, "check", "-c", "broker.conf.lua")
    assert p.returncode == 0 and "configuration broker.conf.lua: ok" in p.err, p.err

    # 3. eval --explain of a captured real request, at the time it was sent.
    raw = ("POST /v1/tenants/acme/token HTTP/1.1\r\nHost: broker.example.com\r\n"
           "Content-Type: application/json\r\nOrigin: https://support.acme.example\r\n"
           "Authorization: Bearer %s\r\n\r\n{\"user_id\": \"globex:bob\"}" % token("acme:sam", "support", THEN))
    (d / "sam.http").write_text(raw)
    late = broker(d, "eval", "-c", "broker.conf.lua", "--tenant", "acme", "--request", "sam.http", "--explain")
    assert late.returncode == 1 and "401" in late.err and "expired" in late.err, late.err
    p = broker(d, "eval", "-c", "broker.conf.lua", "--tenant", "acme", "--request", "sam.http", "--explain",
               "--now", str(THEN + 60))
    assert p.returncode == 0, p.err
    e = json.loads(p.out)
    assert e["decision"] == "deny" and e["reason"] == "organisation globex has not opted in to support", e
    assert e["decided_at"] == str(d / "policies" / "acme.lua") + ":30", e

    # 4. Serve with the audit log on; some traffic.
    srv = Process([BROKER_BIN, "serve", "-c", str(conf), "--listen", "127.0.0.1:0", "--pid-file",
                   str(d / "broker.pid")], env(double=double))
    try:
        port = int(srv.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        traffic = [("acme:alice", "acme:alice", None, 200), ("acme:sam", "acme:bob", "support", 200),
                   ("acme:sam", "acme:ceo", "support", 403), ("acme:sam", "initech:peter", "support", 403),
                   ("acme:alice", "acme:bob", None, 403)]
        for sub, user, role, status in traffic:
            r = ask(port, sub, user, role)
            assert r.status == status, (user, r.status, r.body)
        audit = d / "audit.jsonl"
        assert until(lambda: len(audit.read_text().splitlines()) == 5)

        # 5. replay the day against the candidate: one difference, exit 1; no secret needed.
        p = broker(d, "replay", "-c", "candidate.conf.lua", "audit.jsonl", secrets=False)
        assert p.returncode == 1, p.err
        assert p.out.startswith("audit.jsonl:2: request "), p.out
        assert ("user acme:bob: allow user_id:acme:bob inbox:read:messages inbox:write:events read:brands "
                "for 900 s -> allow user_id:acme:bob inbox:read:messages for 600 s [decided at ") in p.out, p.out
        assert "5 line(s), 5 decided again, 1 differ" in p.err, p.err
        p = broker(d, "replay", "-c", "broker.conf.lua", "audit.jsonl", secrets=False)
        assert p.returncode == 0 and p.out == "", (p.out, p.err)

        # 6. shadow_policy on, by `courier-broker reload`.
        text = conf.read_text()
        assert '    -- shadow_policy = "policies/acme_next.lua",' in text
        conf.write_text(text.replace("-- shadow_policy", "shadow_policy"))  # the doc's sed
        p = broker(d, "reload", "-c", "broker.conf.lua", "--pid-file", "broker.pid")
        assert p.returncode == 0 and "ok, generation 2 serving" in p.err, p.err
        assert ask(port, "acme:alice", "acme:alice").status == 200
        assert ask(port, "acme:sam", "acme:bob", "support").status == 200
        same = 'broker_shadow_decisions_total{tenant="acme",result="same"}'
        differs = 'broker_shadow_decisions_total{tenant="acme",result="differs"}'
        assert until(lambda: metric(port, same) == 1 and metric(port, differs) == 1), srv.text()[-2000:]
        diffs = [l for l in srv.json_lines() if l.get("event") == "shadow_diff"]
        assert len(diffs) == 1 and diffs[0]["user"] == "acme:bob", diffs
        assert diffs[0]["shadow_scope"] == "user_id:acme:bob inbox:read:messages", diffs
        assert diffs[0]["shadow_expires_in"] == 600 and diffs[0]["live_expires_in"] == 900, diffs

        # 7. Promote, shadow off, reload.
        shutil.copy(d / "policies" / "acme_next.lua", d / "policies" / "acme.lua")
        shutil.copy(d / "policies" / "acme_next_test.lua", d / "policies" / "acme_test.lua")
        # The doc's sed -i 's|^    shadow_policy|    -- shadow_policy|'
        conf.write_text(re.sub(r"(?m)^    shadow_policy", "    -- shadow_policy", conf.read_text()))
        assert conf.read_text() == text
        p = broker(d, "reload", "-c", "broker.conf.lua", "--pid-file", "broker.pid")
        assert p.returncode == 0 and "ok, generation 3 serving" in p.err, p.err
        r = ask(port, "acme:sam", "acme:bob", "support")
        assert r.status == 200 and r.header("X-Policy-Revision") == diffs[0]["shadow_revision"], r.headers

        # 8. The kill switch in an incident: within a second, no reload.
        with open(d / "blocked" / "acme.txt", "a") as f:
            f.write("acme:bob\n")
        assert until(lambda: ask(port, "acme:bob", "acme:bob").status == 403)
        r = ask(port, "acme:bob", "acme:bob")
        assert r.json()["error"] == "user_denied", r.body
        assert metric(port, 'broker_killswitch_denied_total{tenant="acme",reason="user_denied"}') >= 1
        assert ask(port, "acme:alice", "acme:alice").status == 200
    finally:
        srv.stop()
    # Replaying a log with the incident in it: refused lines are not policy decisions.
    p = broker(d, "replay", "-c", "broker.conf.lua", "audit.jsonl", secrets=False)
    assert re.search(r"\d+ line\(s\) refused before the policy", p.err), p.err
