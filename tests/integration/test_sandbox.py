"""The policy sandbox, escape by escape, through the real broker.

Each hostile policy below tries one known way out of a Lua sandbox (issue 4,
item 1) or one way around the budgets (item 2). Every one must end as a 500
policy_error without calling Courier, fast, and the broker must serve the
next request normally. A policy that "succeeds" in its escape returns an
allowing decision, so a hole shows up as a 200.
"""
import time

import pytest

from conftest import Broker, Double, mint, policy

INBOX = "inbox:read:messages inbox:write:events read:brands"


ALLOW = '  return { allow = true, tier = "inbox" }'

ESCAPES = {
    # Bytecode: load refuses binary chunks, string.dump does not exist.
    "binary_chunk": policy('  local f = assert(load(string.char(27) .. "LuaT" .. string.char(0, 25, 147, 13, 10, 26, 10)))\n' + ALLOW),
    "binary_chunk_mode_b": policy('  local f = assert(load("return 1", "x", "b"))\n' + ALLOW),
    "string_dump": policy("  local b = string.dump(function() end)\n" + ALLOW),
    "string_dump_method": policy('  local b = (""):dump()\n' + ALLOW),
    # package/require (Redis CVE-2022-0543): no system module, no path.
    "require_os": policy('  local os = require("os")\n  os.execute("id")\n' + ALLOW),
    "require_io": policy('  local io = require("io")\n' + ALLOW),
    "require_dotdot": policy('  local x = require("../x")\n' + ALLOW),
    "require_absolute": policy('  local x = require("/etc/passwd")\n' + ALLOW),
    "require_dotted": policy('  local x = require("a.b")\n' + ALLOW),
    "package_loadlib": policy('  package.loadlib("/lib/x86_64-linux-gnu/libc.so.6", "system")\n' + ALLOW),
    "debug": policy("  debug.sethook()\n" + ALLOW),
    "debug_getregistry": policy("  local r = debug.getregistry()\n" + ALLOW),
    # The shared string metatable (Kong #7133).
    "string_metatable": policy('  getmetatable("").__index.upper = function() return "pwned" end\n' + ALLOW),
    "string_metatable_set": policy('  setmetatable("", {})\n' + ALLOW),
    "string_table_write": policy("  string.upper = function() return 'pwned' end\n" + ALLOW),
    # Shared tables: read-only to setmetatable and rawset.
    "setmetatable_string": policy('  setmetatable(string, { __index = function() return "pwned" end })\n' + ALLOW),
    "rawset_string": policy('  rawset(string, "upper", function() return "pwned" end)\n' + ALLOW),
    "rawset_broker": policy('  rawset(broker.tiers, "inbox", { "write:brands" })\n' + ALLOW),
    "rawset_env": policy('  rawset(_ENV, "pwned", true)\n' + ALLOW),
    "setmetatable_env": policy("  setmetatable(_ENV, {})\n" + ALLOW),
    "gc_metamethod": policy("  setmetatable({}, { __gc = function() while true do end end })\n" + ALLOW),
    "collectgarbage": policy('  collectgarbage("stop")\n' + ALLOW),
    "io_open": policy('  io.open("/etc/passwd")\n' + ALLOW),
    "os_execute": policy('  os.execute("id")\n' + ALLOW),
    "os_getenv": policy('  local k = os.getenv("COURIER_API_KEY")\n' + ALLOW),
    "dofile": policy('  dofile("/etc/passwd")\n' + ALLOW),
    "loadfile": policy('  loadfile("/etc/passwd")\n' + ALLOW),
    # Coroutines could dodge the budget: there are none.
    "coroutine_wrap": policy("  coroutine.wrap(function() while true do end end)()\n" + ALLOW),
    "coroutine_create": policy("  local co = coroutine.create(function() end)\n" + ALLOW),
    # Budgets that pcall cannot catch.
    "loop_in_pcall": policy("  for i = 1, 1000 do pcall(function() while true do end end) end\n" + ALLOW),
    "loop_in_xpcall_handler": policy("  xpcall(function() while true do end end, function() while true do end end)\n" + ALLOW),
    "memory_in_pcall": policy("  pcall(function() local t = {} while true do t[#t + 1] = ('x'):rep(1000) .. #t end end)\n" + ALLOW),
    "memory_rep_in_pcall": policy("  pcall(string.rep, 'x', 1e9)\n" + ALLOW),
    "memory_rep_method": policy("  pcall(function() return ('x'):rep(1e9) end)\n" + ALLOW),
    "pattern_bomb": policy("  pcall(string.find, ('a'):rep(5000), ('a*'):rep(30) .. 'b')\n" + ALLOW),
    "pattern_bomb_method": policy("  pcall(function() return ('a'):rep(5000):match(('a*'):rep(30) .. 'b') end)\n" + ALLOW),
    "pattern_bomb_gsub": policy("  pcall(string.gsub, ('a'):rep(5000), ('.-'):rep(20) .. 'b', '')\n" + ALLOW),
    "pattern_bomb_gmatch": policy("  pcall(function() for x in ('a'):rep(5000):gmatch(('a*'):rep(10) .. 'b') do end end)\n" + ALLOW),
    "format_bomb": policy("  pcall(string.format, ('%99d'):rep(20000), table.unpack({}, 1, 20000))\n" + ALLOW),
    "concat_bomb": policy("  pcall(table.concat, {}, '', 1, 1 << 40)\n" + ALLOW),
    "unpack_bomb": policy("  pcall(table.unpack, {}, 1, 1 << 30)\n" + ALLOW),
    "table_move_bomb": policy("  pcall(table.move, {}, 1, 1 << 40, 1)\n" + ALLOW),
    "utf8_char_bomb": policy("  pcall(utf8.char, string.byte(('x'):rep(200000), 1, -1))\n" + ALLOW),
    # Library functions that loop in C over their arguments: charged per call.
    "packsize_loop": policy("  local f = ('i4'):rep(500000)\n  for i = 1, 1e6 do pcall(string.packsize, f) end\n" + ALLOW),
    "unpack_loop": policy("  local f, d = ('b'):rep(100000), ('x'):rep(100000)\n"
                          "  for i = 1, 1e6 do pcall(string.unpack, f, d) end\n" + ALLOW),
    "utf8_len_loop": policy("  local s = ('x'):rep(1000000)\n  for i = 1, 1e6 do pcall(utf8.len, s) end\n" + ALLOW),
    "load_loop": policy("  local src = ('x = 1 '):rep(10000)\n  for i = 1, 1e6 do pcall(load, src) end\n" + ALLOW),
    "insert_loop": policy(
        "  local t = {} for i = 1, 10 do table.move({string.byte(('x'):rep(90000), 1, -1)}, 1, 90000, #t + 1, t) end\n"
        "  for i = 1, 1000 do table.insert(t, 1, 'x') end\n" + ALLOW),
    # Issue 10, class 2: C loops whose length was read twice or not charged.
    "rep_empty": policy("  for i = 1, 1e9 do local s = string.rep('', 1 << 40) end\n" + ALLOW),
    "rep_empty_sep_loop": policy("  for i = 1, 1e9 do pcall(string.rep, '', 1 << 40, '') end\n" + ALLOW),
    "len_toctou": policy(
        "  local n = 0\n"
        "  local t = setmetatable({}, { __len = function() n = n + 1 return n % 2 == 1 and 0 or 1 << 40 end })\n"
        "  table.insert(t, 1, 'x')\n" + ALLOW),
    "len_toctou_remove": policy(
        "  local n = 0\n"
        "  local t = setmetatable({}, { __len = function() n = n + 1 return n % 2 == 1 and 0 or 1 << 40 end })\n"
        "  for i = 1, 1e9 do pcall(table.remove, t, 1) end\n" + ALLOW),
    "tonumber_loop": policy("  local s = ('1'):rep(1000000)\n  for i = 1, 1e9 do tonumber(s, 10) end\n" + ALLOW),
    "compare_loop": policy("  local a, b = ('x'):rep(1000000), ('x'):rep(999999) .. 'x'\n"
                           "  for i = 1, 1e9 do local c = a < b end\n" + ALLOW),
    # Globals cannot be created; the standard tables are read-only.
    "global_assignment": policy("  pwned = true\n" + ALLOW),
    "global_function": policy("  function pwned() end\n" + ALLOW),
    "string_field_write": policy("  string.pwned = true\n" + ALLOW),
    "math_field_write": policy("  math.pi = 3\n" + ALLOW),
    "req_write": policy('  req.user_id = "root"\n' + ALLOW),
    "req_nested_write": policy('  req.identity.claims.tier = "push"\n' + ALLOW),
}

# The control tenant: must see pristine libraries whatever the others did.
CONTROL = policy("""
  assert(("x"):upper() == "X" and string.upper("y") == "Y")
  assert(broker.tiers.inbox[1] == "inbox:read:messages" and #broker.tiers.inbox == 3)
  assert(pwned == nil and not pcall(rawget, _ENV, "pwned"))
  assert(math.pi > 3.14)
  return { allow = true, tier = "inbox" }""")


@pytest.fixture(scope="module")
def sandbox_broker(tmp_path_factory):
    d = Double()
    pols = dict(ESCAPES)
    pols["default"] = CONTROL
    pols["os"] = CONTROL  # an os.lua beside the policies: require("os") must still refuse
    # One worker thread: every escape and every control request share one engine.
    b = Broker(tmp_path_factory.mktemp("sandbox"), d, policies=pols, extra="threads = 1")
    yield b
    b.stop()
    d.stop()


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escape_is_a_policy_error_and_the_broker_serves_on(sandbox_broker, name):
    b = sandbox_broker
    before = b.double.served()
    t0 = time.monotonic()
    r = b.post("/v1/tenants/%s/token" % name, body={"user_id": "alice"}, token=mint())
    elapsed = time.monotonic() - t0
    assert r.status == 500, (name, r.status, r.body)
    doc = r.json()
    assert doc["error"] == "policy_error", doc
    assert "traceback" not in r.body.decode() and ".lua" not in r.body.decode()
    assert b.double.served() == before  # no token was asked for
    assert elapsed < 1.0, elapsed
    # The next request on the same worker is served normally, with pristine libraries.
    ok = b.post(body={"user_id": "alice"}, token=mint())
    assert ok.status == 200, ok.body
    assert ok.json()["scope"] == "user_id:alice " + INBOX


@pytest.fixture(scope="module")
def charged_broker(tmp_path_factory):
    """The library-call escapes with a time budget far above what their
    instruction budget allows (5 s), so only the charge can stop them, however
    slow the build (sanitizers) or busy the machine."""
    d = Double()
    pols = {n: ESCAPES[n] for n in ("packsize_loop", "unpack_loop", "utf8_len_loop")}
    pols["default"] = CONTROL
    b = Broker(tmp_path_factory.mktemp("charged"), d, policies=pols,
               extra="threads = 1\npolicy_limits = { timeout_ms = 5000 }")
    yield b
    b.stop()
    d.stop()


@pytest.mark.parametrize("name,charged", [("packsize_loop", "string.pack/unpack"),
                                          ("unpack_loop", "string.pack/unpack"),
                                          ("utf8_len_loop", "utf8 walk")])
def test_work_inside_library_calls_is_charged(charged_broker, name, charged):
    """The budget runs out inside the library call (its work is counted), not
    at the next clock check between calls."""
    b = charged_broker
    r = b.post("/v1/tenants/%s/token" % name, body={"user_id": "alice"}, token=mint())
    assert r.status == 500, r.body
    deadline = time.monotonic() + 5
    lines = []
    while not lines and time.monotonic() < deadline:
        lines = [l for l in b.p.json_lines() if l.get("tenant") == name and l.get("status") == 500]
        time.sleep(0.02)
    # "...budget exceeded (N ...): <what was charged>": the charged call is named.
    assert lines and "): %s" % charged in lines[-1]["reason"], lines


def test_pattern_bomb_is_stopped_well_within_100_ms(sandbox_broker):
    b = sandbox_broker
    for _ in range(3):
        t0 = time.monotonic()
        r = b.post("/v1/tenants/pattern_bomb/token", body={"user_id": "alice"}, token=mint())
        assert r.status == 500
        assert time.monotonic() - t0 < 0.1 * 3  # HTTP round trip included; the engine's share is logged
    lines = [l for l in b.p.json_lines() if l.get("tenant") == "pattern_bomb" and l.get("status") == 500]
    assert lines and all(l["latency_ms"] < 100 for l in lines), lines
    assert "string pattern matching" in lines[-1]["reason"], lines[-1]


def test_policy_error_log_names_file_line_and_traceback(broker_factory):
    b = broker_factory(policies={"default": """local function check(x)
  error("no way: " .. x)
end
local function middle(x) check(x) end
return function(req)
  middle(req.user_id)
  return { allow = true, tier = "inbox" }
end
"""})
    r = b.post(body={"user_id": "alice"}, token=mint())
    assert r.status == 500 and r.json()["error"] == "policy_error"
    body = r.body.decode()
    assert "no way" not in body and "default.lua" not in body
    m = b.p.wait_for(r"policy error: .*default\.lua:2: no way: alice \[traceback: .*default\.lua:2 in check; "
                     r".*default\.lua:4 in middle; .*default\.lua:6 in function")
    assert m


def test_no_state_between_requests_or_tenants(broker_factory):
    counter = """local count = 0
local seen = {}
return function(req)
  count = count + 1
  seen[#seen + 1] = req.user_id
  return { allow = false, reason = "count " .. count .. " seen " .. #seen }
end
"""
    toucher = """return function(req)
  pcall(function() broker.tiers.inbox[1] = "write:brands" end)
  pcall(function() string.upper = nil end)
  pcall(rawset, string, "upper", nil)
  pcall(function() getmetatable("").__index = {} end)
  return { allow = false, reason = "touched" }
end
"""
    b = broker_factory(policies={"default": CONTROL, "counter": counter, "toucher": toucher},
                       extra="threads = 1")
    for _ in range(3):
        r = b.post("/v1/tenants/counter/token", body={"user_id": "alice"}, token=mint())
        assert r.status == 403 and r.json()["message"] == "count 1 seen 1", r.body
        r = b.post("/v1/tenants/toucher/token", body={"user_id": "alice"}, token=mint())
        assert r.status == 403
        r = b.post(body={"user_id": "alice"}, token=mint())
        assert r.status == 200, r.body


def test_budgets_apply_to_required_modules(broker_factory, tmp_path):
    b = broker_factory(policies={
        "default": CONTROL,
        "spin": 'local m = require("spinner")\nreturn function(req) m.spin() return { allow = true, tier = "inbox" } end\n',
        "spinner": "local M = {}\nfunction M.spin() pcall(function() while true do end end) end\nreturn M\n",
    }, tenants={"default": {}, "spin": {}})
    r = b.post("/v1/tenants/spin/token", body={"user_id": "alice"}, token=mint())
    assert r.status == 500 and r.json()["error"] == "policy_error"
    assert b.post(body={"user_id": "alice"}, token=mint()).status == 200


# ------------------------------------------- issue 10, class 1: <close> + budget

AUDIT = """return function(req)
  local outcome = "error"
  local audit <close> = setmetatable({}, { __close = function() broker.log("decision for", req.user_id, outcome) end })
  for _, g in ipairs(type(req.body.groups) == "table" and req.body.groups or {}) do
    if type(g) == "string" and g:find("admin", 1, true) then outcome = "deny"; return { allow = false } end
    for _ = 1, 2000 do end
  end
  outcome = "allow"; return { allow = true, tier = "inbox" }
end
"""

CLOSE_AT_TOP = """local guard <close> = setmetatable({}, { __close = function() end })
for i = 1, 1e9 do end
return function(req) return { allow = true, tier = "inbox" } end
"""


def test_close_variable_and_budget_breach_neither_kill_nor_stop_the_broker(broker_factory):
    """A pending <close> variable plus a spent budget aborted the whole
    process (one request killed every tenant; a SIGHUP killed production)."""
    b = broker_factory(policies={"default": CONTROL, "audit": AUDIT}, extra="threads = 1")
    for _ in range(3):
        r = b.post("/v1/tenants/audit/token", body={"user_id": "alice", "groups": ["g"] * 1500}, token=mint())
        assert r.status == 500 and r.json()["error"] == "policy_error", r.body
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
    assert b.post("/v1/tenants/audit/token", body={"user_id": "alice", "groups": ["g"]}, token=mint()).status == 200
    # A reload with such a policy at its top level is refused; the broker serves on.
    (b.dir / "policies" / "audit.lua").write_text(CLOSE_AT_TOP)
    b.sighup()
    b.p.wait_for(r"reload refused: tenant audit: .*audit\.lua.*generation \d+ keeps serving", timeout=10)
    assert b.p.proc.poll() is None
    assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
    assert b.post("/v1/tenants/audit/token", body={"user_id": "alice", "groups": ["g"]}, token=mint()).status == 200


# ------------------------------------------- issue 10, class 3: reloads

@pytest.mark.parametrize("file,text", [
    ("spin.lua", "for i = 1, 1e9 do local pad = string.rep('', 1 << 40) end\n"
                 "return function(req) return { allow = true, tier = 'inbox' } end\n"),
    ("spin.lua", "local t = {} for i = 1, 3 do t[i] = string.rep('x', 1 << 30) .. i end\n"
                 "return function(req) return { allow = true, tier = 'inbox' } end\n"),
    ("spin_test.lua", "for i = 1, 1e9 do local pad = string.rep('', 1 << 40) end\nreturn {}\n"),
    ("spin_test.lua", "local t = {} for i = 1, 3 do t[i] = string.rep('x', 1 << 30) .. i end\nreturn {}\n"),
])
def test_reload_with_a_c_loop_or_bomb_is_refused_and_sigterm_honoured(broker_factory, file, text):
    """A C loop or a memory bomb in a policy's top level or a test file hung
    the reload on the signal thread (SIGTERM ignored) or grew the broker by
    gigabytes; it is refused quickly and the running generation serves on."""
    b = broker_factory(policies={"default": CONTROL, "spin": CONTROL})
    (b.dir / "policies" / file).write_text(text)
    b.sighup()
    b.p.wait_for(r"reload refused: tenant spin: .*%s.*generation \d+ keeps serving" % file.replace(".", r"\."),
                 timeout=10)
    assert b.post("/v1/tenants/spin/token", body={"user_id": "alice"}, token=mint()).status == 200
    t0 = time.monotonic()
    assert b.stop() == 0
    assert time.monotonic() - t0 < 10
