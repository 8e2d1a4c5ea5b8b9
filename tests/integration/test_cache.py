"""Identical grants: single-flight (concurrent identical grants share one
Courier call) and the token cache (tenants.*.token_cache).

The C double counts the calls it served and has a latency knob; every wait is
bounded.
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import ALLOW_POLICY, metrics, mint, policy, reload_ok, wait_token_lines

CACHE = "token_cache = true,"


def ask(b, user="alice", **kw):
    return b.post(body={"user_id": user}, token=mint(sub=user), **kw)


def ok(r):
    assert r.status == 200, (r.status, r.body)
    return r.json()


def cache_metric(b, result):
    return metrics(b)['broker_token_cache_total{result="%s"}' % result]


# ------------------------------------------------------------ single-flight


def concurrent(b, n, users=None):
    users = users or ["alice"] * n
    barrier = threading.Barrier(n)

    def one(u):
        barrier.wait(5)
        return ask(b, u, timeout=15)

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, users))


def test_concurrent_identical_grants_share_one_courier_call(broker_factory, double):
    # One loop: the table of calls in flight is per loop (docs/operations.md).
    b = broker_factory(extra="threads = 1")
    double.configure(latency_ms=1500)
    rs = concurrent(b, 8)
    docs = [ok(r) for r in rs]
    assert double.served() == 1
    assert len({d["token"] for d in docs}) == 1
    assert all(d["user_id"] == "alice" and d["expires_in"] == 3600 for d in docs)
    assert metrics(b)["broker_upstream_shared_total"] == 7
    # Each request is still decided and logged on its own.
    lines = wait_token_lines(b, 8)
    assert [l["status"] for l in lines] == [200] * 8


def test_single_flight_shares_an_error_too(broker_factory, double):
    b = broker_factory(extra="threads = 1")
    # A 400: never retried (courier.retries), so one call answers all four.
    double.configure(latency_ms=1000, status=400)
    rs = concurrent(b, 4)
    for r in rs:
        assert r.status == 502, (r.status, r.body)
        assert r.json()["error"] == "upstream_error"
    assert double.served() == 1


def test_different_grants_do_not_share(broker_factory, double):
    b = broker_factory(extra="threads = 1")
    double.configure(latency_ms=800)
    rs = concurrent(b, 4, ["u1", "u2", "u3", "u4"])
    docs = [ok(r) for r in rs]
    assert [d["user_id"] for d in docs] == ["u1", "u2", "u3", "u4"]
    assert double.served() == 4


def test_two_loops_make_at_most_two_calls(broker_factory, double):
    b = broker_factory(extra="threads = 2")
    double.configure(latency_ms=1500)
    rs = concurrent(b, 8)
    for r in rs:
        ok(r)
    assert 1 <= double.served() <= 2


# ------------------------------------------------------------------ the cache


def test_cache_is_off_by_default(broker, double):
    a, c = ok(ask(broker)), ok(ask(broker))
    assert double.served() == 2
    assert a["token"] != c["token"] or double.served() == 2


def test_cache_hit_makes_one_courier_call(broker_factory, double):
    b = broker_factory(tenants={"default": {"extra": CACHE}})
    a = ok(ask(b))
    c = ok(ask(b))
    assert double.served() == 1
    assert a["token"] == c["token"] and a["scope"] == c["scope"]
    # Its real remaining lifetime: never more than granted, barely less.
    assert 3590 <= c["expires_in"] <= 3600
    assert c["expires_at"] == a["expires_at"]
    assert cache_metric(b, "hit") == 1 and cache_metric(b, "miss") == 1
    # Another user, another grant: a call of its own.
    ok(ask(b, "bob"))
    assert double.served() == 2
    # The token never reaches the log.
    assert a["token"] not in b.p.text()


def test_policy_still_decides_every_request(broker_factory, double, tmp_path):
    gate = tmp_path / "deny"
    pol = policy("""
  if req.body.deny then return { allow = false, reason = "no" } end
  return { allow = true, tier = "inbox", expires_in = "1h" }
""")
    b = broker_factory(tenants={"default": {"extra": CACHE}}, policies={"default": pol})
    ok(ask(b))
    r = b.post(body={"user_id": "alice", "deny": True}, token=mint(sub="alice"))
    assert r.status == 403
    assert double.served() == 1


def test_cache_expires_after_half_the_lifetime(broker_factory, double):
    pol = policy('return { allow = true, tier = "inbox", expires_in = "4s" }')
    b = broker_factory(tenants={"default": {"extra": CACHE}}, policies={"default": pol})
    a = ok(ask(b))
    c = ok(ask(b))
    assert double.served() == 1 and a["token"] == c["token"]
    assert 2 <= c["expires_in"] <= 4
    time.sleep(2.5)  # less than half of 4 s remains now
    d = ok(ask(b))
    assert double.served() == 2 and d["token"] != a["token"]
    assert d["expires_in"] == 4


def test_cache_serves_while_courier_is_down(broker_factory, double):
    b = broker_factory(tenants={"default": {"extra": CACHE}})
    a = ok(ask(b))
    double.stop()
    c = ok(ask(b))
    assert c["token"] == a["token"]
    r = ask(b, "bob")  # not cached: Courier is needed and gone
    assert r.status in (502, 504), (r.status, r.body)


def test_reload_with_a_changed_policy_drops_the_tenants_tokens(broker_factory, double):
    b = broker_factory(tenants={"default": {"extra": CACHE}})
    a = ok(ask(b))
    assert metrics(b)["broker_token_cache_entries"] == 1
    (b.dir / "policies" / "default.lua").write_text(ALLOW_POLICY + "-- revised\n")
    reload_ok(b)
    # Dropped (zeroed) by the reload itself, before any request asks.
    assert metrics(b)["broker_token_cache_entries"] == 0
    c = ok(ask(b))
    assert double.served() == 2 and c["token"] != a["token"]
    assert ok(ask(b))["token"] == c["token"] and double.served() == 2


def test_reload_without_change_keeps_the_tokens(broker_factory, double):
    b = broker_factory(tenants={"default": {"extra": CACHE}})
    a = ok(ask(b))
    reload_ok(b)
    assert metrics(b)["broker_token_cache_entries"] == 1
    assert ok(ask(b))["token"] == a["token"]
    assert double.served() == 1


def test_reload_turning_the_cache_off_drops_it(broker_factory, double):
    b = broker_factory(tenants={"default": {"extra": CACHE}})
    ok(ask(b))
    b.config.write_text(b.config_text.replace(CACHE, ""))
    reload_ok(b)
    assert metrics(b)["broker_token_cache_entries"] == 0
    ok(ask(b))
    assert double.served() == 2


def test_reload_keeps_only_unchanged_tenants_tokens(broker_factory, double):
    other = "token_cache = true, max_expires_in = \"2h\","
    tenants = {"default": {"extra": CACHE}, "other": {"extra": other}}
    b = broker_factory(tenants=tenants, policies={"default": ALLOW_POLICY, "other": ALLOW_POLICY})

    def ask_other():
        return ok(b.post("/v1/tenants/other/token", body={"user_id": "alice"}, token=mint(sub="alice")))

    a, o = ok(ask(b)), ask_other()
    assert metrics(b)["broker_token_cache_entries"] == 2
    # Only "other" changes (its cache is turned off): "default" keeps its token.
    b.config.write_text(b.config_text.replace(other, ""))
    reload_ok(b)
    assert metrics(b)["broker_token_cache_entries"] == 1
    assert ok(ask(b))["token"] == a["token"]
    assert ask_other()["token"] != o["token"]
    assert double.served() == 3
