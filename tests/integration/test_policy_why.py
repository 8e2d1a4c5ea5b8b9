"""Why a decision was made, and what a change would do (issue 15): the
revision on every decided answer, `replay` of audit-log lines, `eval` of a
raw request, and `--explain`."""
import json
import os
import subprocess

from conftest import APP_SECRET, BROKER_BIN, COURIER_KEY, Broker, mint, policy

TIMEOUT = 60

DECIDE = policy('if req.user_id == "mallory" then return { allow = false, reason = "blocked user" } end\n'
                'if req.user_id == "oops" then error("boom") end\n'
                'return { allow = true, tier = "inbox", expires_in = "1h", reason = "ok" }')


def run(args, env=None, cwd=None, input=None):
    e = dict(os.environ)
    e.pop("COURIER_BASE_URL", None)
    e.update({"COURIER_API_KEY": COURIER_KEY, "APP_JWT_SECRET": APP_SECRET})
    e.update(env or {})
    p = subprocess.run([BROKER_BIN] + [str(a) for a in args], env=e, cwd=cwd, input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    p.out = p.stdout.decode("utf-8", "replace")
    p.err = p.stderr.decode("utf-8", "replace")
    return p


# ------------------------------------------------- X-Policy-Revision


def test_every_decided_answer_names_the_revision(tmp_path, double):
    b = Broker(tmp_path, double, policies={"default": DECIDE},
               tenants={"default": {"extra": 'cors_origins = { "https://app.example" },'}})
    try:
        ok = b.post(body={"user_id": "alice"}, token=mint())
        rev = ok.header("X-Policy-Revision")
        assert ok.status == 200 and rev
        denied = b.post(body={"user_id": "mallory"}, token=mint(), headers={"Origin": "https://app.example"})
        assert denied.status == 403, denied.body
        assert denied.header("X-Policy-Revision") == rev, denied.headers
        assert "x-policy-revision" in denied.header("Access-Control-Expose-Headers").lower()
        failed = b.post(body={"user_id": "oops"}, token=mint())
        assert failed.status == 500 and failed.header("X-Policy-Revision") == rev, failed.headers
        # Not decided: no revision to name.
        unauth = b.post(body={"user_id": "alice"})
        assert unauth.status == 401 and unauth.header("X-Policy-Revision") is None
    finally:
        b.stop()


# ------------------------------------------------------------ replay

NEXT = policy('if req.user_id == "mallory" or req.user_id == "bob" then\n'
              '  return { allow = false, reason = "blocked user" }\n'
              'end\n'
              'if req.user_id == "oops" then error("boom") end\n'
              'return { allow = true, tier = "inbox", expires_in = "1h", reason = "ok" }')

NO_SECRETS = {"COURIER_API_KEY": "", "APP_JWT_SECRET": ""}


def record(tmp_path, double, inputs=True):
    """A broker's audit log of four decided requests (alice, bob, mallory: 403, carol)."""
    extra = 'audit_log = { file = "audit.jsonl", inputs = %s }' % ("true" if inputs else "false")
    b = Broker(tmp_path, double, policies={"default": DECIDE}, extra=extra)
    try:
        for i, user in enumerate(("alice", "bob", "mallory", "carol")):
            r = b.post(body={"user_id": user}, token=mint(user), headers={"X-Request-Id": "req-%d" % i})
            assert r.status in (200, 403), r.body
    finally:
        b.stop()
    log = tmp_path / "audit.jsonl"
    assert len(log.read_text().splitlines()) == 4
    return b, log


def no_secrets_env():
    e = dict(NO_SECRETS)
    return e


def test_replay_prints_what_a_candidate_changes(tmp_path, double):
    b, log = record(tmp_path, double)
    # The same policies decide the same: exit 0, nothing printed.
    same = run(["replay", "-c", b.config, log], env=no_secrets_env())
    assert same.returncode == 0, same.err
    assert same.out == ""
    assert "4 decided again, 0 differ" in same.err, same.err
    # The candidate blocks bob: one difference, named by file:line and request.
    (tmp_path / "policies" / "default.lua").write_text(NEXT)
    env = dict(os.environ)
    env.pop("COURIER_API_KEY", None)
    env.pop("APP_JWT_SECRET", None)
    p = subprocess.run([BROKER_BIN, "replay", "-c", str(b.config), str(log)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 1, err
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("%s:2: request req-1, tenant default, user bob: allow user_id:bob " % log), out
    assert "-> deny (blocked user)" in lines[0], out
    assert "1 differ" in err
    j = run(["replay", "-c", b.config, "--format", "json", log], env=no_secrets_env())
    assert j.returncode == 1, j.err
    rows = [json.loads(l) for l in j.out.splitlines()]
    assert len(rows) == 2 and rows[-1]["event"] == "summary", j.out
    d = rows[0]
    assert d["line"] == 2 and d["request_id"] == "req-1" and d["user"] == "bob" and d["tenant"] == "default"
    assert d["recorded"]["decision"] == "allow" and d["recorded"]["expires_in"] == 3600
    assert d["replayed"]["decision"] == "deny" and d["replayed"]["reason"] == "blocked user"
    assert d["replayed"]["policy_revision"] != d["recorded"]["policy_revision"]
    s = rows[-1]
    assert (s["lines"], s["replayed"], s["differ"], s["without_inputs"]) == (4, 4, 1, 0), s
    # --tenant keeps that tenant's lines only.
    other = run(["replay", "-c", b.config, "--tenant", "nosuch", log], env=no_secrets_env())
    assert other.returncode == 2 and "no tenant nosuch" in other.err


def test_replay_counts_lines_it_cannot_decide(tmp_path, double):
    b, log = record(tmp_path, double, inputs=False)
    with open(log, "a") as f:
        f.write("not json\n")
    p = run(["replay", "-c", b.config, log], env=no_secrets_env())
    assert p.returncode == 2, (p.out, p.err)
    assert "4 line(s) without inputs" in p.err and "the first at %s:1" % log in p.err, p.err
    assert "1 line(s) not an audit line" in p.err and "%s:5" % log in p.err, p.err
    assert run(["replay", "-c", b.config], env=no_secrets_env()).returncode == 2
    assert run(["replay", "-c", b.config, "--format", "yaml", log]).returncode == 2
    assert run(["replay", "-c", b.config, tmp_path / "missing.jsonl"]).returncode == 2


def test_replay_does_not_compare_what_the_kill_switch_refused(tmp_path, double):
    """A line the C core refused before the policy ran (kill switch, cluster
    deny list) is no policy decision: counted apart, never a difference."""
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "default.txt").write_text("bob\n")
    extra = 'audit_log = { file = "audit.jsonl", inputs = true }'
    b = Broker(tmp_path, double, policies={"default": DECIDE}, extra=extra,
               tenants={"default": {"extra": 'deny_users = { file = "blocked/default.txt" },'}})
    try:
        for i, user in enumerate(("alice", "bob", "carol")):
            r = b.post(body={"user_id": user}, token=mint(user), headers={"X-Request-Id": "req-%d" % i})
            assert r.status in (200, 403), r.body
    finally:
        b.stop()
    log = tmp_path / "audit.jsonl"
    rows = [json.loads(l) for l in log.read_text().splitlines()]
    assert rows[1]["user"] == "bob" and rows[1]["error"] == "user_denied", rows[1]
    # A line refused by the cluster's deny list, as an audit line would say it.
    cl = dict(rows[1], request_id="req-3", reason="on the cluster's deny list")
    with open(log, "a") as f:
        f.write(json.dumps(cl) + "\n")
    # The incident is over: the candidate has no deny list, and its policy
    # would let bob through. Not a policy difference.
    b.config.write_text(b.config_text.replace('deny_users = { file = "blocked/default.txt" },', ""))
    p = run(["replay", "-c", b.config, log], env=no_secrets_env())
    assert p.returncode == 0, (p.out, p.err)
    assert p.out == "", p.out
    assert "2 decided again, 0 differ" in p.err, p.err
    assert "2 line(s) refused before the policy" in p.err and "the first at %s:2" % log in p.err, p.err
    j = run(["replay", "-c", b.config, "--format", "json", log], env=no_secrets_env())
    s = json.loads(j.out.splitlines()[-1])
    assert j.returncode == 0 and s["refused_before_policy"] == 2 and s["differ"] == 0, j.out


def test_replay_skips_a_giant_line_without_holding_it(tmp_path, double):
    """A line far longer than any audit line (here 600 MB of NULs, a sparse
    file: no disk) is counted as unreadable and the lines after it are still
    decided, within a 400 MB address-space cap: replay reads past it instead
    of growing a buffer to its size (getline did, and stopped at ENOMEM with
    the rest of the log unread and unsaid)."""
    import resource
    b, log = record(tmp_path, double)
    big = tmp_path / "giant.jsonl"
    with open(big, "wb") as f:
        f.truncate(600 << 20)
        f.seek(0, 2)
        f.write(b"\n" + log.read_bytes())

    # ASan and TSan reserve terabytes of shadow address space, so under
    # `make check` and `make tsan` the cap cannot apply; the sparse line still
    # must not stop the lines after it.
    libs = subprocess.run(["ldd", BROKER_BIN], capture_output=True).stdout
    asan = b"libasan" in libs or b"libtsan" in libs

    def cap():
        if not asan:
            resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))

    e = dict(os.environ)
    e.pop("COURIER_API_KEY", None)
    e.pop("APP_JWT_SECRET", None)
    p = subprocess.run([BROKER_BIN, "replay", "-c", str(b.config), str(big)], env=e, preexec_fn=cap,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    err = p.stderr.decode("utf-8", "replace")
    assert "4 decided again, 0 differ" in err, err
    assert "1 line(s) not an audit line" in err and "%s:1" % big in err, err
    assert p.returncode == 2, err


# ------------------------------------------------- eval of a real request

SEES = policy('broker.log("headers", req.headers["x-custom"], tostring(req.headers.authorization))\n'
              'if req.identity.claims.role ~= "admin" then\n'
              '  return { allow = false, reason = "role " .. tostring(req.identity.claims.role) }\n'
              'end\n'
              'return { allow = true, tier = "inbox", expires_in = "1h", reason = "admin " .. req.identity.subject }')


def eval_config(tmp_path, text=SEES, extra=""):
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "acme.lua").write_text(text)
    conf = tmp_path / "broker.conf.lua"
    conf.write_text("""listen = "127.0.0.1:0"
tenants = { acme = {
  api_key = { env = "COURIER_API_KEY" },
  policy = "policies/acme.lua",
  auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
  %s
} }
""" % extra)
    return conf


def raw(token, body='{"user_id": "alice"}', path="/v1/tenants/acme/token", ctype="application/json", extra=""):
    lines = ["POST %s HTTP/1.1" % path, "Host: broker.example", "Content-Type: " + ctype,
             "X-Custom: hello", "Origin: https://app.example"]
    if token:
        lines.append("Authorization: Bearer " + token)
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n" + body).encode()


def eval_env():
    """The requesters' secret only: never the production Courier key."""
    e = dict(os.environ)
    e.pop("COURIER_API_KEY", None)
    e.pop("COURIER_BASE_URL", None)
    e["APP_JWT_SECRET"] = APP_SECRET
    return e


def run_eval(conf, data, *args):
    p = subprocess.run([BROKER_BIN, "eval", "-c", str(conf), "--tenant", "acme", "--request", "-"] + list(args),
                       input=data, env=eval_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=TIMEOUT)
    p.out, p.err = p.stdout.decode(), p.stderr.decode()
    return p


def test_eval_needs_no_courier_key(tmp_path):
    conf = eval_config(tmp_path)
    p = run_eval(conf, json.dumps({"user_id": "alice", "identity": {
        "authenticated": True, "subject": "alice", "claims": {"role": "admin"}}}).encode())
    assert p.returncode == 0, p.err
    d = json.loads(p.out)
    assert d["decision"] == "allow" and d["reason"] == "admin alice", d


def test_eval_verifies_a_raw_request(tmp_path):
    conf = eval_config(tmp_path)
    p = run_eval(conf, raw(mint("alice", role="admin")))
    assert p.returncode == 0, p.err
    d = json.loads(p.out)
    assert d["decision"] == "allow" and d["reason"] == "admin alice", d
    # The policy saw the other headers, never the credential.
    assert d["policy_log"] == ["headers hello nil"], d
    p = run_eval(conf, raw(mint("alice", role="viewer")))
    assert p.returncode == 0 and json.loads(p.out)["reason"] == "role viewer", p.err
    # A token the tenant's auth refuses never reaches the policy.
    bad = run_eval(conf, raw(mint("alice", secret="another-secret-0123456789abcdef", role="admin")))
    assert bad.returncode == 1 and bad.out == "", bad.out
    assert "401" in bad.err and "signature" in bad.err, bad.err
    expired = run_eval(conf, raw(mint("alice", ttl=-600, role="admin")))
    assert expired.returncode == 1 and "401" in expired.err, expired.err
    assert run_eval(conf, raw(None)).returncode == 1
    # What the server answers before the policy, eval answers too.
    wrong = run_eval(conf, raw(mint(role="admin"), path="/v1/tenants/other/token"))
    assert wrong.returncode == 1 and "404" in wrong.err, wrong.err
    media = run_eval(conf, raw(mint(role="admin"), ctype="text/plain"))
    assert media.returncode == 1 and "415" in media.err, media.err
    body = run_eval(conf, raw(mint(role="admin"), body='{"user_id": ""}'))
    assert body.returncode == 1 and "400" in body.err, body.err
    two = run_eval(conf, raw(mint(role="admin"), extra="Authorization: Bearer x\r\n"))
    assert two.returncode == 1 and "400" in two.err, two.err
    assert run_eval(conf, b"GET / HTTP/1.1\r\n\r\n").returncode == 1
    assert run_eval(conf, b"not a request").returncode == 1


NOW_POLICY = policy('return { allow = true, tier = "inbox", expires_in = "1h", reason = "now " .. req.now }')


def test_eval_now_replays_a_captured_request_at_its_time(tmp_path):
    """--now is the clock of both the credential's exp/nbf and req.now."""
    import jwt as pyjwt
    conf = eval_config(tmp_path, text=NOW_POLICY)
    then = 1700000000
    tok = pyjwt.encode({"sub": "alice", "iat": then, "nbf": then, "exp": then + 300}, APP_SECRET,
                       algorithm="HS256")
    # Captured long ago: expired now.
    late = run_eval(conf, raw(tok))
    assert late.returncode == 1 and "401" in late.err, late.err
    p = run_eval(conf, raw(tok), "--now", str(then + 60))
    assert p.returncode == 0, p.err
    assert json.loads(p.out)["reason"] == "now %d" % (then + 60), p.out
    early = run_eval(conf, raw(tok), "--now", str(then - 600))
    assert early.returncode == 1 and "401" in early.err, early.err
    after = run_eval(conf, raw(tok), "--now", str(then + 3600))  # past exp and any leeway
    assert after.returncode == 1 and "401" in after.err, after.err
    # A described request without its own now takes --now; with one, keeps it.
    d = run_eval(conf, json.dumps({"user_id": "alice"}).encode(), "--now", "1234")
    assert d.returncode == 0 and json.loads(d.out)["reason"] == "now 1234", (d.out, d.err)
    d = run_eval(conf, json.dumps({"user_id": "alice", "now": 99}).encode(), "--now", "1234")
    assert d.returncode == 0 and json.loads(d.out)["reason"] == "now 99", (d.out, d.err)
    for bad in ("soon", "-5", "12x", ""):
        b = run_eval(conf, raw(tok), "--now", bad)
        assert b.returncode == 2 and "--now" in b.err, (bad, b.err)


def test_eval_refuses_unknown_fields(tmp_path):
    conf = eval_config(tmp_path)
    for desc, word in (({"user_id": "alice", "identiy": {}}, "identiy"),
                       ({"user_id": "alice", "identity": {"subjet": "alice"}}, "identity.subjet"),
                       ({"user_id": "alice", "client": {"addr": "1.2.3.4"}}, "client.addr"),
                       ({"user_id": "alice", "headers": {"Authorization": "Bearer x"}}, "headers.Authorization")):
        p = run_eval(conf, json.dumps(desc).encode())
        assert p.returncode == 1 and p.out == "", (desc, p.out)
        assert word in p.err, (desc, p.err)


# ------------------------------------------------------------ explain

RULES = ("local M = {}\n"                                            # 1
         "function M.check(req)\n"                                   # 2
         "  if req.user_id == 'mallory' then\n"                      # 3
         "    local d = { allow = false, reason = 'blocked' }\n"     # 4
         "    return d\n"                                            # 5
         "  end\n"                                                   # 6
         "end\n"                                                     # 7
         "return M\n")
MAIN = ("local rules = require('rules')\n"                           # 1
        "return function(req)\n"                                     # 2
        "  local d = rules.check(req)\n"                             # 3
        "  if d then return d end\n"                                 # 4
        "  return { allow = true, tier = 'inbox', expires_in = '1h', reason = 'ok' }\n"  # 5
        "end\n")


def explain_setup(tmp_path):
    conf = eval_config(tmp_path, text=MAIN)
    (tmp_path / "policies" / "rules.lua").write_text(RULES)
    return conf


def test_eval_explain_names_the_return_that_decided(tmp_path):
    conf = explain_setup(tmp_path)
    pol = os.path.realpath(tmp_path / "policies")
    p = run_eval(conf, json.dumps({"user_id": "mallory"}).encode(), "--explain")
    assert p.returncode == 0, p.err
    d = json.loads(p.out)
    assert d["decision"] == "deny"
    assert d["decided_at"] == pol + "/rules.lua:5", d
    assert d["decided_by"] == [pol + "/acme.lua:3", pol + "/rules.lua:5"], d
    p = run_eval(conf, json.dumps({"user_id": "alice"}).encode(), "--explain")
    assert json.loads(p.out)["decided_at"] == pol + "/acme.lua:5", p.out
    # Without --explain, no hook and no such field.
    p = run_eval(conf, json.dumps({"user_id": "mallory"}).encode())
    assert "decided_at" not in json.loads(p.out)


def test_test_failure_names_the_return(tmp_path):
    explain_setup(tmp_path)
    (tmp_path / "policies" / "acme_test.lua").write_text(
        'return { { name = "mallory", req = { user_id = "mallory" }, expect = { allow = true } } }\n')
    p = run(["test", tmp_path / "policies" / "acme_test.lua"])
    assert p.returncode == 1
    assert "decided at rules.lua:5, called from acme.lua:3" in p.out, p.out


def test_audit_log_and_replay_name_the_return(tmp_path, double):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "rules.lua").write_text(RULES)
    b = Broker(tmp_path, double, policies={"default": MAIN},
               extra='audit_log = { file = "audit.jsonl", inputs = true }')
    try:
        assert b.post(body={"user_id": "mallory"}, token=mint("mallory")).status == 403
        assert b.post(body={"user_id": "alice"}, token=mint("alice")).status == 200
    finally:
        b.stop()
    pol = os.path.realpath(tmp_path / "policies")
    lines = [json.loads(l) for l in (tmp_path / "audit.jsonl").read_text().splitlines()]
    deny, allow = lines[-2], lines[-1]
    assert deny["decided_at"] == pol + "/rules.lua:5", deny
    assert deny["decided_by"] == [pol + "/default.lua:3", pol + "/rules.lua:5"], deny
    assert allow["decided_at"] == pol + "/default.lua:5", allow
    # The candidate lets mallory through: replay says where it decides so now.
    (tmp_path / "policies" / "rules.lua").write_text(RULES.replace("'mallory'", "'nobody'"))
    p = run(["replay", "-c", b.config, "--format", "json", tmp_path / "audit.jsonl"], env=NO_SECRETS)
    assert p.returncode == 1, p.err
    d = [json.loads(l) for l in p.out.splitlines()][-2]
    assert d["user"] == "mallory" and d["replayed"]["decision"] == "allow", d
    assert d["replayed"]["decided_by"] == [pol + "/default.lua:5"], d
    t = run(["replay", "-c", b.config, tmp_path / "audit.jsonl"], env=NO_SECRETS)
    assert "[decided at %s/default.lua:5]" % pol in t.out, t.out
