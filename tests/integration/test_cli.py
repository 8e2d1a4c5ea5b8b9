"""The command line: --version, --help, check, test and eval.

Each test writes its own configuration, policies and policy tests into a
temporary folder and runs the real binary (BROKER_BIN) with a bounded timeout.
`eval` and `check` run against a base_url that points at the Courier test
double, whose served count must stay 0: neither command may call Courier.
"""
import json
import os
import re
import subprocess

import pytest

from conftest import APP_SECRET, BROKER_BIN, COURIER_KEY, ROOT, lua_str

TIMEOUT = 15

ALLOW = """
return function(req)
  return { allow = true, tier = "inbox", expires_in = "1h", reason = "test" }
end
"""

# Own inbox only; "boom" raises; "long" asks for more than any ceiling.
OWN_INBOX = """
return function(req)
  if req.user_id == "boom" then
    error("kaboom")
  end
  if req.user_id == "long" then
    return { allow = true, tier = "inbox", expires_in = "30d", reason = "long one" }
  end
  if req.identity.authenticated and req.user_id == req.identity.subject then
    return { allow = true, tier = "inbox", expires_in = "1h", reason = "own inbox" }
  end
  return { allow = false, reason = "not your inbox" }
end
"""

INBOX_SCOPES = '{ "inbox:read:messages", "inbox:write:events", "read:brands" }'


def ident(sub):
    return '{ authenticated = true, method = "jwt", subject = %s, claims = { sub = %s } }' % (lua_str(sub), lua_str(sub))


def case(name, user, sub, expect):
    return "  { name = %s, req = { user_id = %s, identity = %s, now = 1700000000 }, expect = %s },\n" % (
        lua_str(name), lua_str(user), ident(sub), expect)


GOOD_TESTS = "return {\n" + \
    case("own inbox is allowed", "alice", "alice",
         '{ allow = true, scopes = %s, expires_in = "1h", reason = "own inbox" }' % INBOX_SCOPES) + \
    case("someone else's inbox is denied", "bob", "alice", '{ allow = false, reason = "not your inbox" }') + \
    case("boom is a policy error", "boom", "alice", "{ error = true }") + \
    "}\n"

BAD_TESTS = "return {\n" + \
    case("own inbox is allowed", "alice", "alice", '{ allow = true, expires_in = 3600 }') + \
    case("bob expected allowed by mistake", "bob", "alice", "{ allow = true }") + \
    "}\n"


def env_for(extra=None, drop=()):
    e = dict(os.environ)
    e.pop("COURIER_BASE_URL", None)
    e.update({"COURIER_API_KEY": COURIER_KEY, "APP_JWT_SECRET": APP_SECRET})
    for k in drop:
        e.pop(k, None)
    e.update(extra or {})
    return e


def run(args, env=None, input=None, cwd=None):
    p = subprocess.run([BROKER_BIN] + [str(a) for a in args], env=env or env_for(), input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT, cwd=cwd)
    p.out = p.stdout.decode("utf-8", "replace")
    p.err = p.stderr.decode("utf-8", "replace")
    p.all = p.out + "\n" + p.err
    # Log lines are JSON (with "/" escaped as "\/"): add their decoded messages.
    for line in p.all.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            p.all += "\n" + " ".join(str(v) for v in doc.values())
    return p


def write_config(d, policy=ALLOW, policy_test=None, api_key='{ env = "COURIER_API_KEY" }', base_url="http://127.0.0.1:9",
                 top="", courier_extra="", tenant_extra="", hmac='{ env = "APP_JWT_SECRET" }'):
    d.mkdir(parents=True, exist_ok=True)
    (d / "policies").mkdir(exist_ok=True)
    (d / "policies" / "default.lua").write_text(policy)
    if policy_test is not None:
        (d / "policies" / "default_test.lua").write_text(policy_test)
    text = """listen = "127.0.0.1:0"
courier = { base_url = %s, timeout_ms = 2000%s }
%s
tenants = {
  default = {
    api_key = %s,
    policy = "policies/default.lua",
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = %s } },
    %s
  },
}
""" % (lua_str(base_url), courier_extra, top, api_key, hmac, tenant_extra)
    cfg = d / "broker.conf.lua"
    cfg.write_text(text)
    return cfg


def check(cfg, **kw):
    return run(["check", "-c", cfg], **kw)


# ------------------------------------------------------------ version, help

def test_version():
    p = run(["--version"])
    assert p.returncode == 0, p.all
    assert re.search(r"courier-broker \d+\.\d+\.\d+", p.out), p.out


def test_help_lists_every_command():
    p = run(["--help"])
    assert p.returncode == 0, p.all
    for cmd in ("serve", "check", "test", "eval", "--version"):
        assert cmd in p.out, p.out


def test_readme_quotes_help():
    """README's Commands block is `--help` verbatim: the usage has one source."""
    p = run(["--help"])
    assert p.returncode == 0, p.all
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    m = re.search(r"^## Commands\n\n```\n(.*?)^```", readme, re.M | re.S)
    assert m, "README.md has no Commands block"
    assert m.group(1) == p.out, "README.md's Commands block differs from --help:\n" + p.out


def test_unknown_command_is_refused(tmp_path):
    cfg = write_config(tmp_path)
    p = run(["frobnicate", "-c", cfg])
    assert p.returncode != 0
    assert "frobnicate" in p.all


# ------------------------------------------------------------------- check

def test_check_good_config(tmp_path, double):
    cfg = write_config(tmp_path, policy=OWN_INBOX, policy_test=GOOD_TESTS, base_url=double.url)
    p = check(cfg)
    assert p.returncode == 0, p.all
    assert "ok" in p.all
    assert double.served() == 0


def test_check_unknown_top_level_key_names_key_and_file(tmp_path):
    cfg = write_config(tmp_path, top='lissten = "127.0.0.1:8080"')
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert "lissten" in p.all
    assert "broker.conf.lua" in p.all


def test_check_unknown_nested_key_names_key_path(tmp_path):
    cfg = write_config(tmp_path, tenant_extra='max_expire_in = "1h",')
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert "max_expire_in" in p.all
    assert "broker.conf.lua" in p.all


def test_check_wrong_type(tmp_path):
    cfg = write_config(tmp_path, courier_extra=', connect_timeout_ms = "fast"')
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert "connect_timeout_ms" in p.all
    assert "broker.conf.lua" in p.all


@pytest.mark.parametrize("where", ["api_key", "hmac_secret"])
def test_check_literal_secret_refused_and_not_echoed(tmp_path, where):
    literal = "ck_literal_5ecret_9d8c7b6a5f4e3d2c"
    if where == "api_key":
        cfg = write_config(tmp_path, api_key=lua_str(literal))
    else:
        cfg = write_config(tmp_path, hmac=lua_str(literal))
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert where in p.all
    assert literal not in p.all
    assert literal[:12] not in p.all


def test_check_key_file_mode(tmp_path):
    key = tmp_path / "courier.key"
    key.write_text(COURIER_KEY + "\n")
    cfg = write_config(tmp_path, api_key='{ file = "courier.key" }')
    os.chmod(key, 0o644)
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert "courier.key" in p.all
    assert COURIER_KEY not in p.all
    os.chmod(key, 0o640)
    p = check(cfg)
    assert p.returncode == 1, p.all
    os.chmod(key, 0o600)
    p = check(cfg)
    assert p.returncode == 0, p.all
    assert COURIER_KEY not in p.all


def test_check_missing_key_file(tmp_path):
    cfg = write_config(tmp_path, api_key='{ file = "nowhere.key" }')
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert "nowhere.key" in p.all


def test_check_missing_env_var(tmp_path):
    cfg = write_config(tmp_path, api_key='{ env = "COURIER_KEY_NOT_SET_4F2A" }')
    p = check(cfg, env=env_for(drop=("COURIER_KEY_NOT_SET_4F2A",)))
    assert p.returncode == 1, p.all
    assert "COURIER_KEY_NOT_SET_4F2A" in p.all
    # The same config passes once the variable is set.
    p = check(cfg, env=env_for({"COURIER_KEY_NOT_SET_4F2A": COURIER_KEY}))
    assert p.returncode == 0, p.all


def test_check_policy_syntax_error_names_file_and_line(tmp_path):
    broken = "return function(req)\n  local x =\n  return { allow = true }\nend end\n"
    cfg = write_config(tmp_path, policy=broken)
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert re.search(r"default\.lua:\d+", p.all), p.all


def test_check_runs_failing_policy_tests(tmp_path, double):
    cfg = write_config(tmp_path, policy=OWN_INBOX, policy_test=BAD_TESTS, base_url=double.url)
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert "bob expected allowed by mistake" in p.all
    assert double.served() == 0
    # The same policy with correct tests passes.
    (tmp_path / "policies" / "default_test.lua").write_text(GOOD_TESTS)
    assert check(cfg).returncode == 0


def test_check_broken_policy_test_file(tmp_path):
    cfg = write_config(tmp_path, policy=OWN_INBOX, policy_test="return {\n  { name = 'x', \n")
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert "default_test.lua" in p.all


def test_check_missing_config(tmp_path):
    p = check(tmp_path / "nope.lua")
    assert p.returncode == 1, p.all
    assert "nope.lua" in p.all


# -------------------------------------------------------------------- test

def write_tests(d, policy=OWN_INBOX, tests=GOOD_TESTS, name="inbox"):
    d.mkdir(parents=True, exist_ok=True)
    (d / ("%s.lua" % name)).write_text(policy)
    (d / ("%s_test.lua" % name)).write_text(tests)
    return d


def test_test_repository_policies():
    folder = os.path.join(ROOT, "policies")
    p = run(["test", folder])
    assert p.returncode == 0, p.all
    m = re.search(r"^(\d+) passed, (\d+) failed$", p.out, re.M)
    assert m and int(m.group(1)) > 0 and m.group(2) == "0", p.out


def test_test_all_pass(tmp_path):
    d = write_tests(tmp_path / "pol")
    p = run(["test", d])
    assert p.returncode == 0, p.all
    assert p.out.count("PASS ") == 3, p.out
    assert p.out.strip().splitlines()[-1] == "3 passed, 0 failed"


def test_test_pass_and_fail(tmp_path):
    d = write_tests(tmp_path / "pol", tests=BAD_TESTS)
    p = run(["test", d])
    assert p.returncode == 1, p.all
    lines = p.out.strip().splitlines()
    assert any(l.startswith("PASS ") and "inbox_test.lua" in l and l.endswith(": own inbox is allowed")
               for l in lines), p.out
    fail = [l for l in lines if l.startswith("FAIL ")]
    assert len(fail) == 1, p.out
    assert "inbox_test.lua" in fail[0] and "bob expected allowed by mistake" in fail[0], fail
    # Says why: the policy denied with its reason.
    assert "not your inbox" in fail[0] or "deny" in fail[0], fail
    assert lines[-1] == "1 passed, 1 failed", p.out


def test_test_a_single_file(tmp_path):
    d = write_tests(tmp_path / "pol")
    p = run(["test", d / "inbox_test.lua"])
    assert p.returncode == 0, p.all
    assert p.out.strip().splitlines()[-1] == "3 passed, 0 failed"


def test_test_several_paths_and_files(tmp_path):
    a = write_tests(tmp_path / "a")
    b = write_tests(tmp_path / "b", tests=BAD_TESTS, name="other")
    p = run(["test", a, b])
    assert p.returncode == 1, p.all
    assert p.out.strip().splitlines()[-1] == "4 passed, 1 failed"


def test_test_expectation_details(tmp_path):
    tests = "return {\n" + \
        case("wrong scopes", "alice", "alice", '{ allow = true, scopes = { "inbox:read:messages" } }') + \
        case("wrong lifetime", "alice", "alice", '{ allow = true, expires_in = "2h" }') + \
        case("wrong reason", "alice", "alice", '{ allow = true, reason = "other" }') + \
        case("error expected", "alice", "alice", "{ error = true }") + \
        case("unexpected error", "boom", "alice", "{ allow = false }") + \
        case("capped at 7d", "long", "x", '{ allow = true, expires_in = "7d" }') + \
        "}\n"
    d = write_tests(tmp_path / "pol", tests=tests)
    p = run(["test", d])
    assert p.returncode == 1, p.all
    assert p.out.strip().splitlines()[-1] == "1 passed, 5 failed", p.out
    assert re.search(r"^PASS .*: capped at 7d$", p.out, re.M), p.out


def test_test_run_filters(tmp_path):
    d = write_tests(tmp_path / "pol", tests=BAD_TESTS)
    p = run(["test", "--run", "own inbox", d])
    assert p.returncode == 0, p.all
    assert "bob expected" not in p.out
    assert p.out.strip().splitlines()[-1] == "1 passed, 0 failed"
    p = run(["test", "--run", "bob", d])
    assert p.returncode == 1, p.all
    assert "own inbox" not in p.out
    assert p.out.strip().splitlines()[-1] == "0 passed, 1 failed"
    # A pattern that selects nothing: no case ran.
    p = run(["test", "--run", "no such case zzz", d])
    assert p.returncode == 1, p.all


def test_test_format_json(tmp_path):
    d = write_tests(tmp_path / "pol", tests=BAD_TESTS)
    p = run(["test", "--format", "json", d])
    assert p.returncode == 1, p.all
    docs = [json.loads(l) for l in p.out.strip().splitlines()]
    assert all(isinstance(x, dict) for x in docs)
    text = json.dumps(docs)
    assert "own inbox is allowed" in text and "bob expected allowed by mistake" in text
    assert "PASS " not in p.out and "FAIL " not in p.out


def test_test_format_json_escapes_names(tmp_path):
    tests = "return {\n" + case('say "hi" \\ back', "alice", "alice", "{ allow = true }") + "}\n"
    d = write_tests(tmp_path / "pol", tests=tests)
    p = run(["test", "--format", "json", d])
    assert p.returncode == 0, p.all
    docs = [json.loads(l) for l in p.out.strip().splitlines()]  # every line must be JSON
    assert 'say "hi" \\ back' in [x.get("case") for x in docs], docs


def test_test_bad_format_refused(tmp_path):
    d = write_tests(tmp_path / "pol")
    p = run(["test", "--format", "yaml", d])
    assert p.returncode != 0


def test_test_folder_without_tests(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "lonely.lua").write_text(ALLOW)
    p = run(["test", d])
    assert p.returncode == 1, p.all


def test_test_missing_path(tmp_path):
    p = run(["test", tmp_path / "does-not-exist"])
    assert p.returncode == 1, p.all


def test_test_file_without_policy(tmp_path):
    d = tmp_path / "orphan"
    d.mkdir()
    (d / "ghost_test.lua").write_text(GOOD_TESTS)
    p = run(["test", d])
    assert p.returncode == 1, p.all
    assert "ghost" in p.all


def test_test_policy_syntax_error(tmp_path):
    d = write_tests(tmp_path / "pol", policy="return function(req\n")
    p = run(["test", d])
    assert p.returncode == 1, p.all
    assert "inbox.lua" in p.all


def test_test_files_have_no_io(tmp_path):
    tests = """
local found = {}
for _, n in ipairs({ "io", "os", "require", "load", "loadfile", "dofile", "package", "debug", "collectgarbage" }) do
  if _ENV[n] ~= nil then found[#found + 1] = n end
end
if #found > 0 then error("available to a test file: " .. table.concat(found, ", ")) end
return {
""" + case("own inbox is allowed", "alice", "alice", "{ allow = true }") + "}\n"
    d = write_tests(tmp_path / "pol", tests=tests)
    p = run(["test", d])
    assert p.returncode == 0, p.all
    assert p.out.strip().splitlines()[-1] == "1 passed, 0 failed"


# -------------------------------------------------------------------- eval

EVAL_TENANT = 'max_expires_in = "1d",'


def eval_req(user, sub="alice", **kw):
    req = {"user_id": user, "identity": {"authenticated": True, "method": "jwt", "subject": sub,
                                         "claims": {"sub": sub}},
           "client": {"ip": "127.0.0.1"}, "headers": {"origin": "https://app.example.com"}}
    req.update(kw)
    return req


@pytest.fixture
def eval_cfg(tmp_path, double):
    cfg = write_config(tmp_path, policy=OWN_INBOX, base_url=double.url, tenant_extra=EVAL_TENANT)
    yield cfg
    assert double.served() == 0, "eval called Courier"


def evaluate(cfg, req, tenant="default", via_file=None):
    if via_file is not None:
        via_file.write_text(json.dumps(req))
        p = run(["eval", "-c", cfg, "--tenant", tenant, "--request", via_file])
    else:
        p = run(["eval", "-c", cfg, "--tenant", tenant, "--request", "-"], input=json.dumps(req).encode())
    return p


def one_json(p):
    lines = [l for l in p.out.strip().splitlines() if l.strip()]
    assert len(lines) == 1, p.all
    return json.loads(lines[0])


def test_eval_allow(eval_cfg):
    p = evaluate(eval_cfg, eval_req("alice"))
    assert p.returncode == 0, p.all
    d = one_json(p)
    assert d["decision"] == "allow" and d["allow"] is True, d
    scope = d["scope"].split()
    assert scope[0] == "user_id:alice"
    assert sorted(scope[1:]) == sorted(["inbox:read:messages", "inbox:write:events", "read:brands"])
    assert [s for s in scope if s.startswith("user_id:")] == ["user_id:alice"]
    assert d["expires_in"] == 3600
    assert isinstance(d["courier_expires_in"], str) and re.search(r"[a-z]$", d["courier_expires_in"]), d
    assert d["reason"] == "own inbox"
    assert isinstance(d["policy_revision"], str) and d["policy_revision"]
    assert not d.get("warnings")


def test_eval_from_file(eval_cfg, tmp_path):
    p = evaluate(eval_cfg, eval_req("alice"), via_file=tmp_path / "req.json")
    assert p.returncode == 0, p.all
    assert one_json(p)["decision"] == "allow"


def test_eval_deny(eval_cfg):
    p = evaluate(eval_cfg, eval_req("bob"))
    assert p.returncode == 0, p.all
    d = one_json(p)
    assert d["decision"] == "deny" and d["allow"] is False, d
    assert d["reason"] == "not your inbox"
    assert "scope" not in d and "token" not in d


def test_eval_policy_error(eval_cfg):
    p = evaluate(eval_cfg, eval_req("boom"))
    d = one_json(p)
    assert d["decision"] == "policy_error" and d["allow"] is False, d
    assert "scope" not in d and "token" not in d


def test_eval_capped_lifetime_warns(eval_cfg):
    p = evaluate(eval_cfg, eval_req("long", sub="x"))
    assert p.returncode == 0, p.all
    d = one_json(p)
    assert d["decision"] == "allow", d
    assert d["expires_in"] == 86400, d
    assert d.get("warnings") and any("cap" in w for w in d["warnings"]), d


def test_eval_unknown_tenant(eval_cfg):
    p = evaluate(eval_cfg, eval_req("alice"), tenant="nobody")
    assert p.returncode != 0
    assert "nobody" in p.all


def test_eval_bad_request_json(eval_cfg):
    p = run(["eval", "-c", eval_cfg, "--tenant", "default", "--request", "-"], input=b"{not json")
    assert p.returncode != 0


def test_eval_ignores_real_base_url_env(eval_cfg, double):
    # Even with COURIER_BASE_URL pointing at the double, eval calls nothing.
    p = run(["eval", "-c", eval_cfg, "--tenant", "default", "--request", "-"],
            env=env_for({"COURIER_BASE_URL": double.url}), input=json.dumps(eval_req("alice")).encode())
    assert p.returncode == 0, p.all
    assert one_json(p)["decision"] == "allow"
    assert double.served() == 0


# ------------------------------------------------ reload: the broker's verdict

def _reload(b, pid_file, env):
    return run(["reload", "-c", b.config, "--pid-file", pid_file], env=env)


def test_reload_refused_by_the_broker_exits_1_with_its_reason(brokers, double, tmp_path):
    """The caller's check passes (its environment has the variable), the
    broker's does not: the broker refuses, and so does the command."""
    from conftest import generation
    pid_file = tmp_path / "broker.pid"
    b = brokers("b", double, args=("--pid-file", str(pid_file)))
    g0 = generation(b)
    b.config.write_text(b.config_text.replace('{ env = "COURIER_API_KEY" }', '{ env = "ONLY_THE_CALLER_HAS_IT" }'))
    r = _reload(b, pid_file, env_for({"ONLY_THE_CALLER_HAS_IT": COURIER_KEY}))
    assert r.returncode == 1, r.all
    assert "REFUSED" in r.err and "ONLY_THE_CALLER_HAS_IT" in r.err, r.err
    assert "generation %d keeps serving" % g0 in r.err, r.err
    assert generation(b) == g0
    assert (tmp_path / "broker.pid.reload").exists()


def test_reload_ok_exits_0_once_the_new_generation_serves(brokers, double, tmp_path):
    from conftest import DENY_POLICY, generation, mint
    pid_file = tmp_path / "broker.pid"
    b = brokers("b", double, args=("--pid-file", str(pid_file)))
    g0 = generation(b)
    (b.dir / "policies" / "default.lua").write_text(DENY_POLICY)
    r = _reload(b, pid_file, b.env)
    assert r.returncode == 0, r.all
    assert "generation %d serving" % (g0 + 1) in r.err, r.err
    # No waiting: the exit code already means the new generation serves.
    assert b.post(body={"user_id": "alice"}, token=mint("alice")).status == 403
    assert generation(b) == g0 + 1
    # A second reload waits for its own verdict, not the first one's.
    r = _reload(b, pid_file, b.env)
    assert r.returncode == 0, r.all
    assert "generation %d serving" % (g0 + 2) in r.err, r.err
    assert b.stop() == 0
    assert not pid_file.exists() and not (tmp_path / "broker.pid.reload").exists()


# ------------------------------------------------ listen: --listen, and check == serve

@pytest.mark.parametrize("key", ["listen", "admin_listen"])
def test_check_refuses_a_listen_host_name_serve_would_refuse(tmp_path, key):
    top = '%s = "broker.internal:8080"' % key
    cfg = write_config(tmp_path, top=top)
    text = cfg.read_text()
    if key == "listen":
        text = text.replace('listen = "127.0.0.1:0"\n', "")
    cfg.write_text(text)
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert key in p.all and "broker.internal" in p.all and "IP address" in p.all, p.all
    s = run(["serve", "-c", cfg])
    assert s.returncode == 1 and "IP address" in s.all, s.all


def test_check_accepts_ip_and_localhost_listen(tmp_path):
    for addr in ("0.0.0.0:8080", "[::]:8080", "[::1]:0", "localhost:8080"):
        cfg = write_config(tmp_path / addr.replace(":", "_").replace("[", "").replace("]", ""))
        cfg.write_text(cfg.read_text().replace('listen = "127.0.0.1:0"', 'listen = "%s"' % addr))
        p = check(cfg)
        assert p.returncode == 0, (addr, p.all)


def test_serve_listen_overrides_the_file(brokers, double):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    b = brokers("b", double, args=("--listen", "127.0.0.1:%d" % port))
    assert b.port == port
    assert b.get("/healthz").status == 200


def test_serve_listen_is_checked_like_listen(tmp_path):
    cfg = write_config(tmp_path)
    p = run(["serve", "-c", cfg, "--listen", "broker.internal:80"])
    assert p.returncode == 1, p.all
    assert "--listen" in p.all and "IP address" in p.all, p.all
    # Only serve takes it.
    p = run(["check", "-c", cfg, "--listen", "127.0.0.1:0"])
    assert p.returncode == 2


def test_check_refuses_options_that_do_nothing_in_their_place(tmp_path):
    cfg = write_config(tmp_path, tenant_extra="rate_limit = { burst = 20 },")
    p = check(cfg)
    assert p.returncode == 1, p.all
    assert "tenants.default.rate_limit.burst" in p.all and "does nothing" in p.all, p.all
