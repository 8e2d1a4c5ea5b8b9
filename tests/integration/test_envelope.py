"""The envelope: whatever the requester sends and whatever a policy returns,
Courier is only ever asked for a token carrying exactly one user_id scope (the
user asked for), scopes inside the tenant's allowed_scopes, and a capped
lifetime with an explicit unit.

The double accepts every scope in Courier's list (write:brands included) and
any user_id, so each refusal here is the broker's own: were the check
missing, the double would issue a token and the test would see a 200.
"""
import json

import jwt as pyjwt
import pytest

from conftest import COURIER_KEY, Broker, Double, mint, policy, wait_token_lines

DOUBLE_SECRET = "double-signing-secret"
INBOX = ["inbox:read:messages", "inbox:write:events", "read:brands"]
PREFERENCES = INBOX + ["read:preferences", "write:preferences"]
PUSH = PREFERENCES + ["read:user-tokens", "write:user-tokens"]


POLICIES = {
    "default": policy('  return { allow = true, tier = "inbox", expires_in = "1h", reason = "test" }'),
    "outside": policy('  return { allow = true, scopes = { "inbox:read:messages", "write:brands" } }'),
    "outside_only": policy('  return { allow = true, scopes = { "write:brands" } }'),
    "mallory": policy('  return { allow = true, scopes = { "user_id:mallory", "inbox:read:messages" } }'),
    "mallory_only": policy('  return { allow = true, scopes = { "user_id:mallory" } }'),
    "uid_prefix": policy('  return { allow = true, scopes = { "user_id:" .. req.user_id .. "x" } }'),
    "uid_case": policy('  return { allow = true, scopes = { "user_id:" .. string.upper(req.user_id) } }'),
    "own": policy('  return { allow = true, scopes = { "user_id:" .. req.user_id, "inbox:read:messages",'
                  ' "user_id:" .. req.user_id } }'),
    "spacey": policy('  return { allow = true, scopes = { "read:brands write:brands" } }'),
    "spacey_uid": policy('  return { allow = true, scopes = { "read:brands user_id:mallory" } }'),
    "empty_scope": policy('  return { allow = true, scopes = { "" } }'),
    "nul_scope": policy('  return { allow = true, scopes = { "read:brands\\0write:brands" } }'),
    "dup": policy('  return { allow = true, scopes = { "read:brands", "read:brands" } }'),
    "too_many": policy("""
  local s = {}
  for i = 1, 33 do s[i] = "read:brands" end
  return { allow = true, scopes = s }"""),
    "long30d": policy('  return { allow = true, tier = "inbox", expires_in = "30d" }'),
    "capped1d": policy('  return { allow = true, tier = "inbox", expires_in = 100000 }'),
    "dflt": policy('  return { allow = true, tier = "inbox" }'),
    "tier_inbox": policy('  return { allow = true, tier = "inbox" }'),
    "tier_preferences": policy('  return { allow = true, tier = "preferences" }'),
    "tier_push": policy('  return { allow = true, tier = "push" }'),
    "tiers_table": policy('  return { allow = true, scopes = broker.tiers.preferences }'),
    "passthrough": policy('  return { allow = true, tier = "inbox", expires_in = req.expires_in }'),
    "requested": policy('  return { allow = true, scopes = req.scopes or {} }'),
    "narrow": policy('  return { allow = true, tier = "inbox" }'),
    "narrow_ok": policy('  return { allow = true, scopes = { "inbox:read:messages" } }'),
}

TAMPER_POLICY = policy("""
  pcall(function() broker.tiers.inbox[1] = "write:brands" end)
  pcall(function() table.insert(broker.tiers.inbox, "write:brands") end)
  pcall(function() broker.tiers.inbox = { "write:brands" } end)
  pcall(function() broker.tiers = { inbox = { "write:brands" } } end)
  return { allow = true, tier = "inbox" }""")

TENANTS = {name: {} for name in POLICIES}
TENANTS["long30d"] = {"extra": 'max_expires_in = "7d",'}
TENANTS["capped1d"] = {"extra": 'max_expires_in = "1d",'}
TENANTS["dflt"] = {"extra": 'default_expires_in = "10m",'}
TENANTS["narrow"] = {"extra": 'allowed_scopes = { "inbox:read:messages" },'}
TENANTS["narrow_ok"] = {"extra": 'allowed_scopes = { "inbox:read:messages" },'}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = Double()
    b = Broker(tmp_path_factory.mktemp("envelope"), d, policies=POLICIES, tenants=TENANTS)
    yield b, d
    b.stop()
    d.stop()


def ask(b, tenant, body, sub="alice"):
    path = "/v1/token" if tenant == "default" else "/v1/tenants/%s/token" % tenant
    return b.post(path, body=body, token=mint(sub=sub))


def courier_body(d):
    """The body the double received last, as a dict; checks its exact shape."""
    last = d.last()
    assert last["path"] == "/auth/issue-token" and last["method"] == "POST", last
    assert last["content_type"].startswith("application/json"), last
    body = json.loads(last["body"])
    assert set(body) == {"scope", "expires_in"}, body
    return body


def assert_issued(r, d, scopes, expires_in, user="alice"):
    """A 200 whose scope is exactly user_id:<user> + scopes, in the answer, at
    Courier and in the token; lifetime as given, sent to Courier with "s"."""
    assert r.status == 200, r.body
    doc = r.json()
    want = " ".join(["user_id:" + user] + list(scopes))
    assert doc["scope"] == want
    assert doc["user_id"] == user
    assert doc["expires_in"] == expires_in
    body = courier_body(d)
    assert body == {"scope": want, "expires_in": "%ds" % expires_in}
    claims = pyjwt.decode(doc["token"], DOUBLE_SECRET, algorithms=["HS256"])
    assert claims["scope"] == want
    assert claims["exp"] - claims["iat"] == expires_in
    assert [s for s in claims["scope"].split(" ") if s.startswith("user_id:")] == ["user_id:" + user]
    return doc


def assert_refused(r, d, before, status, code):
    assert r.status == status, (r.status, r.body)
    doc = r.json()
    assert doc["error"] == code, doc
    assert "token" not in doc
    assert d.served() == before, "Courier was called"


# ----------------------------------------------------- injection through user_id

INJECTIONS = [
    pytest.param(" ", id="space"),
    pytest.param("\t", id="tab"),
    pytest.param("\n", id="lf"),
    pytest.param("\r", id="cr"),
    pytest.param("\v", id="vt"),
    pytest.param("\f", id="ff"),
    pytest.param("\u0000", id="nul"),
    pytest.param("\u0001", id="soh"),
    pytest.param("\u001f", id="us"),
    pytest.param("\u007f", id="del"),
    pytest.param("\u0085", id="c1-nel"),
    pytest.param("\u009b", id="c1-csi"),
    pytest.param("\u00a0", id="nbsp"),
    pytest.param("\u1680", id="ogham-space"),
    pytest.param("\u2003", id="em-space"),
    pytest.param("\u200b", id="zero-width-space"),
    pytest.param("\u2028", id="line-separator"),
    pytest.param("\u2029", id="paragraph-separator"),
    pytest.param("\u202f", id="narrow-nbsp"),
    pytest.param("\u3000", id="ideographic-space"),
    pytest.param("\ufeff", id="bom"),
]


@pytest.mark.parametrize("sep", INJECTIONS)
@pytest.mark.parametrize("where", ["middle", "end", "start"])
def test_user_id_injection_refused(env, sep, where):
    b, d = env
    before = d.served()
    uid = {"middle": "alice%swrite:brands", "end": "alice%s", "start": "%salice"}[where] % sep
    r = ask(b, "default", {"user_id": uid})
    assert_refused(r, d, before, 400, "invalid_request")


# Issue 10, L7: invisible and bidi code points (Unicode's
# Default_Ignorable_Code_Point set) make user ids that look like someone else's.
INVISIBLE = [
    pytest.param("\u2060", id="word-joiner"),
    pytest.param("\u3164", id="hangul-filler"),
    pytest.param("\u115f", id="hangul-choseong-filler"),
    pytest.param("\uffa0", id="halfwidth-hangul-filler"),
    pytest.param("\u202e", id="rtl-override"),
    pytest.param("\u2066", id="ltr-isolate"),
    pytest.param("\u200e", id="lrm"),
    pytest.param("\u061c", id="arabic-letter-mark"),
    pytest.param("\u00ad", id="soft-hyphen"),
    pytest.param("\ufe0f", id="variation-selector"),
    pytest.param("\U000e0041", id="tag-a"),
]


@pytest.mark.parametrize("cp", INVISIBLE)
def test_user_id_invisible_code_points_refused(env, cp):
    b, d = env
    before = d.served()
    r = ask(b, "default", {"user_id": "ali%sce" % cp})
    assert_refused(r, d, before, 400, "invalid_request")


def test_user_id_injection_via_requested_scopes_policy(env):
    # Even a policy that grants whatever is asked cannot receive a split user id.
    b, d = env
    before = d.served()
    r = ask(b, "requested", {"user_id": "alice user_id:mallory", "scopes": ["read:brands"]})
    assert_refused(r, d, before, 400, "invalid_request")


@pytest.mark.parametrize("raw", [
    pytest.param(b'{"user_id": "alice\xff"}', id="invalid-utf8-byte"),
    pytest.param(b'{"user_id": "alice\xc0\xa0x"}', id="overlong-space"),
    pytest.param(b'{"user_id": "alice\xed\xa0\x80"}', id="utf8-surrogate"),
    pytest.param(b'{"user_id": "alice\\ud800"}', id="escaped-lone-surrogate"),
    pytest.param(b'{"user_id": "alice\x0bx"}', id="raw-vt-in-string"),
])
def test_user_id_bad_bytes_refused(env, raw):
    b, d = env
    before = d.served()
    r = b.post(body=raw, token=mint())
    assert_refused(r, d, before, 400, "invalid_request")


def test_user_id_unicode_without_spaces_is_accepted(env):
    # The control for the refusals above: non-ASCII alone is not refused.
    b, d = env
    uid = "\u00e5lice-\u65e5\u672c:x@example.com"
    r = ask(b, "default", {"user_id": uid})
    assert_issued(r, d, INBOX, 3600, user=uid)


def test_requested_scope_with_space_refused(env):
    b, d = env
    before = d.served()
    r = ask(b, "requested", {"user_id": "alice", "scopes": ["read:brands user_id:mallory"]})
    assert_refused(r, d, before, 400, "invalid_request")


# ----------------------------------------------------- what the policy may grant


@pytest.mark.parametrize("tenant", [
    "outside", "outside_only", "mallory", "mallory_only", "uid_prefix", "uid_case", "spacey", "spacey_uid",
    "empty_scope", "nul_scope", "too_many", "narrow",
])
def test_policy_decision_outside_the_envelope(env, tenant):
    b, d = env
    before = d.served()
    r = ask(b, tenant, {"user_id": "alice"})
    assert_refused(r, d, before, 500, "policy_error")


def test_requested_scope_outside_allowed_refused_even_if_policy_grants_it(env):
    b, d = env
    before = d.served()
    r = ask(b, "requested", {"user_id": "alice", "scopes": ["inbox:read:messages", "write:brands"]})
    assert_refused(r, d, before, 500, "policy_error")


def test_requested_other_user_scope_refused_even_if_policy_grants_it(env):
    b, d = env
    before = d.served()
    r = ask(b, "requested", {"user_id": "alice", "scopes": ["user_id:bob"]})
    assert_refused(r, d, before, 500, "policy_error")


def test_policy_asking_for_own_user_id_gives_exactly_one(env):
    b, d = env
    r = ask(b, "own", {"user_id": "alice"})
    assert_issued(r, d, ["inbox:read:messages"], 3600)


def test_policy_own_user_id_check_is_exact(env):
    # The "own" policy, asked for another user, names that user: still exactly one user_id.
    b, d = env
    r = ask(b, "own", {"user_id": "bob"}, sub="bob")
    assert_issued(r, d, ["inbox:read:messages"], 3600, user="bob")


def test_duplicate_scopes_are_sent_once(env):
    b, d = env
    r = ask(b, "dup", {"user_id": "alice"})
    assert_issued(r, d, ["read:brands"], 3600)


def test_narrow_allowed_scopes_permit_their_scope(env):
    b, d = env
    r = ask(b, "narrow_ok", {"user_id": "alice"})
    assert_issued(r, d, ["inbox:read:messages"], 3600)


def test_policy_cannot_tamper_with_broker_tiers(broker_factory, double):
    # One worker thread: both tenants run in the same policy engine.
    b = broker_factory(policies={"tamper": TAMPER_POLICY, "default": POLICIES["tier_inbox"]},
                       extra="threads = 1")
    r = b.post("/v1/tenants/tamper/token", body={"user_id": "alice"}, token=mint())
    # broker.tiers is read-only: every write raises, the policy's pcalls catch it,
    # and its tier = "inbox" is the contract's inbox tier (a clean inbox token).
    assert_issued(r, double, INBOX, 3600)
    # The next decision, in the same engine, sees the contract's tier too.
    r = b.post(body={"user_id": "alice"}, token=mint())
    assert_issued(r, double, INBOX, 3600)


# ----------------------------------------------------- lifetime


def test_lifetime_capped_at_max_expires_in(env):
    b, d = env
    r = ask(b, "long30d", {"user_id": "alice"})
    assert_issued(r, d, INBOX, 604800)
    last = d.last()
    assert json.loads(last["body"]) == {"scope": "user_id:alice " + " ".join(INBOX), "expires_in": "604800s"}


def test_lifetime_capped_at_tenant_max_in_seconds(env):
    b, d = env
    r = ask(b, "capped1d", {"user_id": "alice"})
    assert_issued(r, d, INBOX, 86400)
    line = wait_token_lines(b, 1, "capped1d")[-1]
    assert line["expires_in"] == 86400 and line.get("capped") is True


def test_default_expires_in_when_policy_gives_none(env):
    b, d = env
    r = ask(b, "dflt", {"user_id": "alice"})
    assert_issued(r, d, INBOX, 600)


def test_default_lifetime_is_one_hour(env):
    b, d = env
    r = ask(b, "tier_inbox", {"user_id": "alice"})
    assert_issued(r, d, INBOX, 3600)


@pytest.mark.parametrize("asked,seconds", [
    ("2h", 7200),
    ("90m", 5400),
    ("2 days", 172800),
    (90, 90),
    ("90s", 90),
    ("30d", 604800),
])
def test_requested_lifetime_passed_by_policy(env, asked, seconds):
    b, d = env
    r = ask(b, "passthrough", {"user_id": "alice", "expires_in": asked})
    assert_issued(r, d, INBOX, seconds)
    assert courier_body(d)["expires_in"] == "%ds" % seconds


def test_numeric_90_reaches_courier_as_seconds(env):
    b, d = env
    r = ask(b, "passthrough", {"user_id": "alice", "expires_in": 90})
    assert r.status == 200, r.body
    assert courier_body(d)["expires_in"] == "90s"
    claims = pyjwt.decode(r.json()["token"], DOUBLE_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 90  # not 0: the double would read "90" as 90 ms


# ----------------------------------------------------- tiers and the Courier call


@pytest.mark.parametrize("tier,scopes", [("inbox", INBOX), ("preferences", PREFERENCES), ("push", PUSH)])
def test_tiers_give_the_contract_scope_lists(env, tier, scopes):
    b, d = env
    r = ask(b, "tier_" + tier, {"user_id": "alice"})
    assert_issued(r, d, scopes, 3600)


def test_broker_tiers_table_matches_contract(env):
    b, d = env
    r = ask(b, "tiers_table", {"user_id": "alice"})
    assert_issued(r, d, PREFERENCES, 3600)


def test_courier_gets_the_api_key_and_exact_body(env):
    b, d = env
    r = ask(b, "default", {"user_id": "alice", "extra": "ignored", "expires_in": "5m"})
    assert r.status == 200, r.body
    last = d.last()
    assert last["authorization"] == "Bearer " + COURIER_KEY
    assert last["content_type"].split(";")[0].strip() == "application/json"
    assert json.loads(last["body"]) == {"scope": "user_id:alice " + " ".join(INBOX), "expires_in": "3600s"}
