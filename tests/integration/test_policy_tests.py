"""Policy test files a security team can trust (issue 15): `courier-broker test`
and the tests `check` runs.

Strict files (a typo, a duplicate name or a case without expectations fails,
naming file:line), fixtures (data, now, identity: tests never read live
data), assertions on broker.log lines, branch coverage, and the traps:
broker.duration with whole seconds, and only required modules compiled.
"""
import json
import os
import subprocess

import pytest

from conftest import APP_SECRET, BROKER_BIN, COURIER_KEY, mint, reload_ok

TIMEOUT = 30


def run(args, input=None):
    e = dict(os.environ)
    e.pop("COURIER_BASE_URL", None)
    e.update({"COURIER_API_KEY": COURIER_KEY, "APP_JWT_SECRET": APP_SECRET})
    p = subprocess.run([BROKER_BIN] + [str(a) for a in args], env=e, input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    p.out = p.stdout.decode("utf-8", "replace")
    p.err = p.stderr.decode("utf-8", "replace")
    p.all = p.out + p.err
    return p


def config(d, extra=""):
    conf = d / "broker.conf.lua"
    conf.write_text('tenants = { default = { api_key = { env = "COURIER_API_KEY" }, '
                    'policy = "policies/p.lua", auth = { none = true }, %s } }\n' % extra)
    return conf


POLICY = """return function(req)
  broker.log("asked for", req.user_id)
  if req.identity.subject == req.user_id then
    return { allow = true, tier = "inbox", reason = "own inbox" }
  end
  local vips = broker.data and broker.data.vips or {}
  for _, v in ipairs(vips) do
    if v == req.user_id then
      broker.log("matched vip")
      return { allow = true, tier = "inbox", expires_in = "15m" }
    end
  end
  if req.now >= 1800000000 then
    return { allow = false, reason = "too late" }
  end
  return { allow = false, reason = "not yours" }
end
"""

GOOD_CASE = '  { name = "own", req = { user_id = "alice", identity = { subject = "alice" } }, ' \
            'expect = { allow = true } },\n'


def write(d, cases, policy=POLICY, head=""):
    pol = d / "policies"
    pol.mkdir(parents=True, exist_ok=True)
    (pol / "p.lua").write_text(policy)
    (pol / "p_test.lua").write_text("return {\n" + head + GOOD_CASE + cases + "}\n")
    return pol


# ------------------------------------------------------------ strict files

# Each bad case sits on line 3 of p_test.lua (after "return {" and GOOD_CASE).
BAD_CASES = {
    "expect_key": ('{ name = "x", req = { user_id = "bob" }, expect = { allow = false, scope = {} } }',
                   "unknown key 'expect.scope'"),
    "req_key": ('{ name = "x", req = { user_id = "bob", identiy = { subject = "bob" } }, expect = { allow = true } }',
                "unknown key 'req.identiy'"),
    "identity_key": ('{ name = "x", req = { user_id = "bob", identity = { subject = "bob", claim = { a = 1 } } },'
                     ' expect = { allow = true } }', "unknown key 'req.identity.claim'"),
    "client_key": ('{ name = "x", req = { user_id = "bob", client = { addr = "10.0.0.1" } }, expect = { allow = false } }',
                   "unknown key 'req.client.addr'"),
    "case_key": ('{ name = "x", req = { user_id = "bob" }, expct = { allow = true } }',
                 "unknown key 'case.expct'"),
    "no_expect": ('{ name = "x", req = { user_id = "bob" } }', "needs an expect table"),
    "empty_expect": ('{ name = "x", req = { user_id = "bob" }, expect = {} }', "expect.allow is missing"),
    "error_false": ('{ name = "x", req = { user_id = "bob" }, expect = { error = false } }', "expect.allow is missing"),
    "deny_with_scopes": ('{ name = "x", req = { user_id = "bob" }, expect = { allow = false, scopes = { "read:brands" } } }',
                         "expect.scopes is never checked on a deny"),
    "error_with_allow": ('{ name = "x", req = { user_id = "bob" }, expect = { error = true, allow = false } }',
                         "expect.allow can never be checked"),
    "duplicate": ('{ name = "own", req = { user_id = "bob" }, expect = { allow = false } }', "duplicate case name"),
    "top_level_scopes_with_body": ('{ name = "x", req = { user_id = "bob", scopes = { "read:brands" }, '
                                   'body = { user_id = "bob" } }, expect = { allow = false } }',
                                   "req.scopes is ignored when req.body is given"),
    "now_float": ('{ name = "x", req = { user_id = "bob", now = 1.5 }, expect = { allow = false } }',
                  "req.now must be an integer"),
    "method": ('{ name = "x", req = { user_id = "bob", identity = { method = "jtw" } }, expect = { allow = false } }',
               'req.identity.method "jtw"'),
    "logs_not_list": ('{ name = "x", req = { user_id = "bob" }, expect = { allow = false, logs = "asked" } }',
                      "expect.logs must be a list"),
    "no_name": ('{ req = { user_id = "bob" }, expect = { allow = false } }', "a case needs a name"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CASES))
def test_a_case_that_checks_nothing_fails_naming_file_and_line(tmp_path, kind):
    text, why = BAD_CASES[kind]
    pol = write(tmp_path, "  " + text + ",\n")
    p = run(["test", pol])
    assert p.returncode == 1, p.all
    fail = [l for l in p.out.splitlines() if l.startswith("FAIL ")]
    assert len(fail) == 1, p.all
    assert why in fail[0], p.all
    if kind != "no_name":
        assert "p_test.lua:3: " in fail[0], p.all
    assert p.out.strip().splitlines()[-1] == "1 passed, 1 failed", p.all
    # check (and so start and reload) refuses the same file.
    p = run(["check", "-c", config(tmp_path)])
    assert p.returncode == 1 and why in p.all, p.all


def test_unknown_key_in_the_file_fails(tmp_path):
    pol = write(tmp_path, "", head="  clock = 1795422600,\n")
    p = run(["test", pol])
    assert p.returncode == 1 and "unknown key 'clock'" in p.all, p.all


def test_strict_failures_in_json(tmp_path):
    pol = write(tmp_path, '  { name = "x", req = { user_id = "bob" }, expect = { alow = false } },\n')
    p = run(["test", "--format", "json", pol])
    docs = [json.loads(l) for l in p.out.splitlines()]
    bad = [d for d in docs if d.get("result") == "fail"]
    assert len(bad) == 1 and "p_test.lua:3: unknown key 'expect.alow'" in bad[0]["error"], p.out
    assert docs[-1] == {"passed": 1, "failed": 1}


def test_eval_refuses_unknown_request_fields(tmp_path):
    write(tmp_path, "")
    conf = config(tmp_path)
    p = run(["eval", "-c", conf, "--tenant", "default"], input=b'{"user_id": "bob", "identiy": {"subject": "bob"}}')
    # one strict check of a described request, the one test cases' req get (policyeval.c)
    assert p.returncode == 1 and "unknown key 'req.identiy'" in p.err, p.all
    p = run(["eval", "-c", conf, "--tenant", "default"], input=b'{"user_id": "bob", "identity": {"subject": "bob"}}')
    assert p.returncode == 0 and json.loads(p.out)["decision"] == "allow", p.all


# ------------------------------------------------------------ fixtures

FIXTURE_CASES = """  { name = "vip from the file's data", req = { user_id = "bob" },
    expect = { allow = true, expires_in = 900 } },
  { name = "the case's own data", data = { vips = { "carol" } }, req = { user_id = "bob" },
    expect = { allow = false, reason = "not yours" } },
  { name = "no data at all", data = false, req = { user_id = "bob" }, expect = { allow = false } },
  { name = "identity default", req = { user_id = "dave" }, expect = { allow = true, reason = "own inbox" } },
  { name = "identity of the case", req = { user_id = "dave", identity = { subject = "erin" } },
    expect = { allow = false, reason = "not yours" } },
  { name = "the file's clock", req = { user_id = "zed" }, expect = { allow = false, reason = "not yours" } },
  { name = "the case's clock", req = { user_id = "zed", now = 1800000000 },
    expect = { allow = false, reason = "too late" } },
"""

FIXTURE_HEAD = """  data = { vips = { "bob" } },
  now = 1795422600,
  identity = { authenticated = true, subject = "dave", claims = { sub = "dave" } },
"""


def test_fixtures_data_now_identity(tmp_path):
    pol = write(tmp_path, FIXTURE_CASES, head=FIXTURE_HEAD)
    p = run(["test", pol])
    assert p.returncode == 0, p.all
    assert p.out.strip().splitlines()[-1] == "8 passed, 0 failed", p.all


def test_fixture_data_instead_of_live_data(tmp_path):
    """Production data changes (bob is no longer a VIP): the tests, on their
    own fixture, still pass under check; without the fixture they depended
    on the live file and fail."""
    pol = write(tmp_path, FIXTURE_CASES, head=FIXTURE_HEAD)
    (pol / "live.json").write_text(json.dumps({"vips": ["someone-else"]}))
    (pol / "p_data.json").write_text(json.dumps({"vips": ["someone-else"]}))
    conf = config(tmp_path, 'data = "policies/live.json"')
    p = run(["check", "-c", conf])
    assert p.returncode == 0, p.all
    assert run(["test", pol]).returncode == 0
    # Without the file's data fixture, the first case reads the live data.
    (pol / "p_test.lua").write_text("return {\n" + FIXTURE_HEAD.replace('data = { vips = { "bob" } },', "")
                                    + GOOD_CASE + FIXTURE_CASES + "}\n")
    p = run(["check", "-c", conf])
    assert p.returncode == 1 and "vip from the file's data" in p.all, p.all


def test_fixture_data_must_be_json(tmp_path):
    pol = write(tmp_path, '  { name = "x", data = { f = function() end }, req = { user_id = "bob" }, '
                          'expect = { allow = false } },\n')
    p = run(["test", pol])
    assert p.returncode == 1 and "p_test.lua:3: data cannot be written as JSON" in p.all, p.all


def test_fixture_data_from_a_json_file_beside_the_tests(tmp_path):
    """data = "PATH": a JSON file, relative to the test file's folder, for the
    file or one case; check (the tests of a reload) reads it too."""
    head = FIXTURE_HEAD.replace('data = { vips = { "bob" } },', 'data = "fixtures/vips.json",')
    cases = FIXTURE_CASES + ('  { name = "the case\'s own file", data = "fixtures/carol.json", req = { user_id = "carol" },\n'
                             '    expect = { allow = true, expires_in = 900 } },\n')
    pol = write(tmp_path, cases, head=head)
    (pol / "fixtures").mkdir()
    (pol / "fixtures" / "vips.json").write_text(json.dumps({"vips": ["bob"]}))
    (pol / "fixtures" / "carol.json").write_text(json.dumps({"vips": ["carol"]}))
    p = run(["test", pol])
    assert p.returncode == 0, p.all
    assert p.out.strip().splitlines()[-1] == "9 passed, 0 failed", p.all
    # Run from elsewhere, and under check: the path is the test file's, not the cwd's.
    (pol / "live.json").write_text(json.dumps({"vips": ["someone-else"]}))
    p = run(["check", "-c", config(tmp_path, 'data = "policies/live.json"')])
    assert p.returncode == 0, p.all
    # A missing or broken file fails the case that uses it, naming the file.
    (pol / "fixtures" / "carol.json").write_text("{not json")
    p = run(["test", pol])
    assert p.returncode == 1 and "1 failed" in p.all and "not valid JSON" in p.all, p.all
    (pol / "fixtures" / "carol.json").unlink()
    p = run(["test", pol])
    assert p.returncode == 1 and "fixtures/carol.json" in p.all, p.all
    pol2 = write(tmp_path / "t2", '  { name = "x", data = 42, req = { user_id = "bob" }, expect = { allow = false } },\n')
    p = run(["test", pol2])
    assert p.returncode == 1 and "p_test.lua:3: data must be a table" in p.all, p.all


def test_case_level_now_and_identity(tmp_path):
    """A case may set now and identity beside req, as it sets data; the
    case's own wins over the file's; giving both now and req.now is refused."""
    cases = """  { name = "the case's clock", now = 1800000000, req = { user_id = "zed" },
    expect = { allow = false, reason = "too late" } },
  { name = "the case's identity", identity = { subject = "zed" }, req = { user_id = "zed" },
    expect = { allow = true, reason = "own inbox" } },
  { name = "the file's still", req = { user_id = "zed" }, expect = { allow = false, reason = "not yours" } },
"""
    pol = write(tmp_path, cases, head=FIXTURE_HEAD)
    p = run(["test", pol])
    assert p.returncode == 0, p.all
    assert p.out.strip().splitlines()[-1] == "4 passed, 0 failed", p.all
    for bad, word in (('now = 1, req = { user_id = "zed", now = 2 }', "both now and req.now"),
                      ('identity = {}, req = { user_id = "zed", identity = {} }', "both identity and req.identity"),
                      ('now = "soon", req = { user_id = "zed" }', "now must be an integer"),
                      ('identity = "zed", req = { user_id = "zed" }', "identity must be a table")):
        pol = write(tmp_path / bad[:8].replace(" ", "_").replace('"', ""),
                    '  { name = "x", %s, expect = { allow = false } },\n' % bad)
        p = run(["test", pol])
        assert p.returncode == 1 and "p_test.lua:3: " in p.all and word in p.all, (bad, p.all)


# ------------------------------------------------------------ broker.log lines

def test_expect_logs(tmp_path):
    pol = write(tmp_path, """  { name = "vip logs", data = { vips = { "bob" } }, req = { user_id = "bob" },
    expect = { allow = true, logs = { "asked for bob", "matched vip" } } },
  { name = "nothing more", req = { user_id = "bob" }, expect = { allow = false, logs = { "asked for bob" } } },
""")
    p = run(["test", pol])
    assert p.returncode == 0, p.all
    pol = write(tmp_path, """  { name = "vip logs", data = { vips = { "bob" } }, req = { user_id = "bob" },
    expect = { allow = true, logs = { "asked for bob" } } },
""")
    p = run(["test", pol])
    assert p.returncode == 1, p.all
    assert 'expected logs ["asked for bob"], got ["asked for bob", "matched vip"]' in p.out, p.out


# ------------------------------------------------------------ the traps

def test_stray_module_is_never_compiled(tmp_path):
    """A stray NAME.lua beside the policies (a half-written draft, a file
    that is not Lua) is no module of any tenant: check passes, serve starts,
    a reload keeps working, the revision ignores it. A module a policy
    requires is compiled (its syntax error fails check)."""
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "p.lua").write_text('local util = require("util")\n'
                               'return function(req) return { allow = util.ok(req), tier = "inbox" } end\n')
    (pol / "util.lua").write_text("return { ok = function(req) return req.user_id == 'alice' end }\n")
    (pol / "draft.lua").write_text("return {\n")
    (pol / "notes.lua").write_text("this is not Lua at all\n")
    conf = config(tmp_path)
    p = run(["check", "-c", conf])
    assert p.returncode == 0, p.all
    (pol / "p_test.lua").write_text('return { { name = "alice", req = { user_id = "alice" }, '
                                    'expect = { allow = true } } }\n')
    p = run(["test", pol])
    assert p.returncode == 0, p.all
    rev = json.loads(run(["eval", "-c", conf, "--tenant", "default"], input=b'{"user_id": "alice"}').out)
    assert rev["decision"] == "allow", rev
    (pol / "draft.lua").write_text("return {}\n")
    rev2 = json.loads(run(["eval", "-c", conf, "--tenant", "default"], input=b'{"user_id": "alice"}').out)
    assert rev2["policy_revision"] == rev["policy_revision"]
    # A module the policy requires is compiled and checked.
    (pol / "util.lua").write_text("return {\n")
    p = run(["check", "-c", conf])
    assert p.returncode == 1 and "util.lua:2" in p.all, p.all


def test_stray_module_does_not_break_a_serving_tenant(broker_factory):
    b = broker_factory(policies={"default": 'return function(req) return { allow = true, tier = "inbox" } end\n'})
    (b.dir / "policies" / "stray.lua").write_text("return {\n")
    reload_ok(b)
    assert b.post(body={"user_id": "alice"}, token=mint()).status == 200


def test_duration_takes_whole_seconds(tmp_path):
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "p.lua").write_text("""return function(req)
  local ok, secs = pcall(broker.duration, req.expires_in or "1h")
  if not ok then
    return { allow = false, reason = "bad expires_in" }
  end
  return { allow = true, tier = "inbox", expires_in = math.min(secs, 3600) }
end
""")
    (pol / "p_test.lua").write_text("""return {
  { name = "seconds", req = { user_id = "a", expires_in = 600 }, expect = { allow = true, expires_in = 600 } },
  { name = "a duration", req = { user_id = "a", expires_in = "10m" }, expect = { allow = true, expires_in = 600 } },
  { name = "capped", req = { user_id = "a", expires_in = 86400 }, expect = { allow = true, expires_in = 3600 } },
}
""")
    p = run(["test", pol])
    assert p.returncode == 0, p.all


# ------------------------------------------------------------ branch coverage

BRANCHY = """return function(req)
  if req.user_id == "alice" and req.now > 0 then
    return { allow = true, tier = "inbox" }
  elseif req.user_id == "bob" then return { allow = false, reason = "bob" }
  end
  return { allow = false, reason = "only alice" }
end
"""


def test_branch_coverage(tmp_path):
    """Line 4 holds both the condition and its return: 100% of lines, yet
    its true branch never ran. Branch coverage says so."""
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "p.lua").write_text(BRANCHY)
    (pol / "p_test.lua").write_text("""return {
  { name = "alice", req = { user_id = "alice" }, expect = { allow = true } },
  { name = "carol", req = { user_id = "carol" }, expect = { allow = false } },
}
""")
    p = run(["test", "--coverage", pol])
    assert p.returncode == 0, p.all
    assert "p.lua: 100% (5/5 lines)" in p.out, p.out
    assert "p.lua: 75% (3/4 branches), not taken: 4 (true)" in p.out, p.out
    assert run(["test", "--threshold", "100", pol]).returncode == 0
    p = run(["test", "--branch-threshold", "76", pol])
    assert p.returncode == 1 and "branch coverage 75% is below the threshold of 76%" in p.err, p.all
    assert run(["test", "--branch-threshold", "75", pol]).returncode == 0
    p = run(["test", "--coverage", "--format", "json", pol])
    cov = [json.loads(l)["coverage"] for l in p.out.splitlines() if '"coverage"' in l]
    mine = [c for c in cov if c["file"].endswith("/p.lua")][0]
    assert (mine["branch_percent"], mine["branches_taken"], mine["branches_total"]) == (75, 3, 4), mine
    # The missing case: every branch taken; the decisions are unchanged by counting.
    (pol / "p_test.lua").write_text("""return {
  { name = "alice", req = { user_id = "alice" }, expect = { allow = true } },
  { name = "bob", req = { user_id = "bob" }, expect = { allow = false, reason = "bob" } },
  { name = "carol", req = { user_id = "carol" }, expect = { allow = false, reason = "only alice" } },
}
""")
    p = run(["test", "--branch-threshold", "100", pol])
    assert p.returncode == 0, p.all
    assert "p.lua: 100% (4/4 branches)" in p.out, p.out


def test_branch_coverage_in_modules_and_example_policies(tmp_path):
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "p.lua").write_text('local h = require("h")\nreturn function(req) return h.decide(req) end\n')
    (pol / "h.lua").write_text("local M = {}\nfunction M.decide(req)\n  if req.now > 0 then\n"
                               "    return { allow = true, tier = \"inbox\" }\n  end\n  return { allow = false }\nend\nreturn M\n")
    (pol / "p_test.lua").write_text('return { { name = "a", req = { user_id = "a" }, expect = { allow = true } } }\n')
    p = run(["test", "--coverage", pol])
    assert p.returncode == 0, p.all
    assert "h.lua: 50% (1/2 branches), not taken: 3 (false)" in p.out, p.out
    from conftest import ROOT
    p = run(["test", "--threshold", "100", "--branch-threshold", "100", os.path.join(ROOT, "policies")])
    assert p.returncode == 0, p.all
