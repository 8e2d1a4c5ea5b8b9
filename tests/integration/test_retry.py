"""Retries of failed Courier calls and the circuit breaker (issue 12).

The double's control API makes the next N calls fail (a status with
Retry-After / retry-after-ms, a dropped connection, a hang); the tests check
how many calls reached it, what the client was answered, and the metrics.
"""
import email.utils
import threading
import time

import pytest

from conftest import ALLOW_POLICY, metrics, mint, request

def ask(b, user="alice"):
    return b.post(body={"user_id": user}, token=mint(sub=user))


def expect_error(r, status, code):
    assert r.status == status, (r.status, r.body)
    assert r.json()["error"] == code, r.body
    assert "token" not in r.json()


def wait_log(b, needle, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in b.p.text():
            return True
        time.sleep(0.02)
    return False


# ------------------------------------------------------------------ retries


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409, 429])
def test_retried_status_then_success_is_200(broker, double, status):
    double.configure(status=status, retry_after_ms="0", next=2)
    r = ask(broker)
    assert r.status == 200, r.body
    assert "token" in r.json()
    assert double.served() == 3
    m = metrics(broker)
    assert m['broker_courier_attempts_total{outcome="retried"}'] == 2
    assert m['broker_courier_attempts_total{outcome="answered"}'] == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_never_retried(broker, double, status):
    double.configure(status=status, next=1)
    expect_error(ask(broker), 502, "upstream_error")
    assert double.served() == 1
    assert ask(broker).status == 200  # the next call is fine: nothing was paused


def test_retries_exhausted_is_502_after_three_calls(broker, double):
    double.configure(status=503, retry_after_ms="0")
    expect_error(ask(broker), 502, "upstream_error")
    assert double.served() == 3
    m = metrics(broker)
    assert m['broker_courier_attempts_total{outcome="retried"}'] == 2
    assert m['broker_courier_attempts_total{outcome="failed"}'] == 1


def test_retry_budget_earned_by_answered_calls(broker_factory, double):
    """Beyond courier.retries, a call may retry on the loop's budget, which
    answered calls earn (10% of a retry each): a fresh broker's failing call
    stops at 3 attempts (an outage earns nothing); after 10 answered calls
    the same failure gets one more attempt, and succeeds."""
    b = broker_factory(extra="threads = 1")
    double.configure(status=503, retry_after_ms="0", next=3)
    expect_error(ask(b), 502, "upstream_error")
    assert double.served() == 3
    for i in range(10):
        assert ask(b, "u%d" % i).status == 200
    assert double.served() == 13
    double.configure(status=503, retry_after_ms="0", next=3)
    r = ask(b, "bob")
    assert r.status == 200, r.body
    assert double.served() == 17
    # The budget is spent: the next such failure stops at 3 attempts again.
    double.configure(status=503, retry_after_ms="0", next=3)
    expect_error(ask(b, "carol"), 502, "upstream_error")
    assert double.served() == 20


def test_retry_budget_off_with_zero(broker_factory, double):
    b = broker_factory(extra="threads = 1\ncourier.retry_budget_percent = 0")
    for i in range(30):
        assert ask(b, "u%d" % i).status == 200
    double.configure(status=503, retry_after_ms="0", next=3)
    expect_error(ask(b, "bob"), 502, "upstream_error")
    assert double.served() == 33


def test_retries_zero_calls_once(broker_factory, double):
    b = broker_factory(extra="courier.retries = 0")
    double.configure(status=503, retry_after_ms="0")
    expect_error(ask(b), 502, "upstream_error")
    assert double.served() == 1


def test_dropped_connection_is_retried(broker, double):
    double.configure(mode="close", next=2)
    r = ask(broker)
    assert r.status == 200, r.body
    assert double.served() == 3


def test_connection_refused_is_retried(broker_factory):
    b = broker_factory(double=None)  # http://127.0.0.1:9: nothing listens there
    expect_error(ask(b), 502, "upstream_error")
    m = metrics(b)
    assert m['broker_courier_attempts_total{outcome="retried"}'] == 2
    assert m['broker_courier_attempts_total{outcome="failed"}'] == 1


def test_retry_after_seconds_is_honoured(broker_factory, double):
    b = broker_factory(courier_timeout_ms=4000)
    double.configure(status=429, retry_after="1", next=1)
    t0 = time.monotonic()
    r = ask(b)
    assert r.status == 200, r.body
    assert time.monotonic() - t0 >= 0.95  # waited as asked, not the 50-100 ms backoff
    assert double.served() == 2


def test_retry_after_ms_is_honoured(broker_factory, double):
    b = broker_factory(courier_timeout_ms=4000)
    double.configure(status=503, retry_after_ms="600", retry_after="30", next=1)  # the ms header wins
    t0 = time.monotonic()
    r = ask(b)
    assert r.status == 200, r.body
    assert time.monotonic() - t0 >= 0.55
    assert double.served() == 2


def test_retry_after_http_date_is_honoured(broker_factory, double):
    b = broker_factory(courier_timeout_ms=5000)
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: a wait of 1-2 s
    double.configure(status=503, retry_after=when, next=1)
    t0 = time.monotonic()
    r = ask(b)
    assert r.status == 200, r.body
    assert time.monotonic() - t0 >= 0.5
    assert double.served() == 2


def test_retry_after_longer_than_the_budget_is_not_waited(broker_factory, double):
    b = broker_factory(courier_timeout_ms=2000)
    double.configure(status=429, retry_after="30")
    t0 = time.monotonic()
    expect_error(ask(b), 502, "upstream_error")
    assert time.monotonic() - t0 < 1.5  # answered at once, not after 30 s or the timeout
    assert double.served() == 1
    assert wait_log(b, "does not fit")


def test_retries_stay_within_timeout_ms(broker_factory, double):
    # 1000 ms in all: call, wait 600 ms, call; a second wait of 600 ms does not fit.
    b = broker_factory(courier_timeout_ms=1000)
    double.configure(status=503, retry_after_ms="600")
    t0 = time.monotonic()
    expect_error(ask(b), 502, "upstream_error")
    assert time.monotonic() - t0 < 1.5
    assert double.served() == 2


def test_hang_then_retry_gets_no_more_than_the_budget(broker_factory, double):
    # A hanging call uses the whole budget: 504, and no retry after it.
    b = broker_factory(courier_timeout_ms=500, extra="courier.connect_timeout_ms = 300")
    double.configure(latency_ms=5000, next=1)
    t0 = time.monotonic()
    expect_error(ask(b), 504, "upstream_timeout")
    assert time.monotonic() - t0 < 2.0
    assert double.served() == 1
    assert ask(b).status == 200


def test_a_retry_gets_only_what_is_left_of_timeout_ms(broker_factory, double):
    # 1000 ms in all: the first call is dropped after 700 ms, the retry gets
    # the ~200 ms left and times out: 504 at about 1 s, never 1 s per attempt.
    b = broker_factory(courier_timeout_ms=1000)
    double.configure(latency_ms=700, mode="close")
    t0 = time.monotonic()
    expect_error(ask(b), 504, "upstream_timeout")
    assert time.monotonic() - t0 < 1.6
    assert double.wait_served(2) == 2


def test_retry_wait_does_not_block_the_loop(broker_factory, double):
    # One request waits 1.5 s for its retry; another, on the same single loop,
    # is served meanwhile.
    b = broker_factory(courier_timeout_ms=4000, extra="threads = 1")
    double.configure(status=503, retry_after="2", next=1)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", ask(b, "slow")))
    t.start()
    assert double.wait_served(1) == 1
    t0 = time.monotonic()
    r = ask(b, "fast")
    assert r.status == 200, r.body
    assert time.monotonic() - t0 < 1.0
    t.join(10)
    assert out["r"].status == 200


# -------------------------------------------------------- circuit breaker

BREAKER = "courier.retries = 0; courier.breaker_failures = 2; courier.breaker_cooldown_ms = 1000"


def test_breaker_opens_answers_503_without_calling_courier(broker_factory, double):
    b = broker_factory(extra=BREAKER)
    double.configure(status=503)
    expect_error(ask(b), 502, "upstream_error")
    expect_error(ask(b), 502, "upstream_error")
    assert double.served() == 2
    t0 = time.monotonic()
    r = ask(b)
    expect_error(r, 503, "upstream_unavailable")
    assert time.monotonic() - t0 < 1.0
    assert 1 <= int(r.header("Retry-After")) <= 1
    assert double.served() == 2  # no Courier call
    m = metrics(b)
    assert m["broker_courier_breakers_open"] == 1
    assert m["broker_courier_paused_total"] == 1
    assert wait_log(b, "closed -> open")


def test_breaker_closes_after_a_successful_probe(broker_factory, double):
    b = broker_factory(extra=BREAKER)
    double.configure(status=500)
    for _ in range(2):
        expect_error(ask(b), 502, "upstream_error")
    expect_error(ask(b), 503, "upstream_unavailable")
    double.reset()
    deadline = time.monotonic() + 5
    r = ask(b)
    while r.status == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
        r = ask(b)
    assert r.status == 200, r.body
    assert double.served() == 1  # the probe: nothing reached Courier while paused
    assert ask(b).status == 200
    assert metrics(b)["broker_courier_breakers_open"] == 0
    assert wait_log(b, "-> closed")


def test_breaker_failed_probe_pauses_longer(broker_factory, double):
    b = broker_factory(extra=BREAKER)
    double.configure(status=502)
    for _ in range(2):
        expect_error(ask(b), 502, "upstream_error")
    deadline = time.monotonic() + 5
    r = ask(b)
    while r.status == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
        r = ask(b)
    expect_error(r, 502, "upstream_error")  # the probe, failed
    assert double.served() == 3
    r = ask(b)
    expect_error(r, 503, "upstream_unavailable")
    assert int(r.header("Retry-After")) == 2  # the pause doubled
    assert wait_log(b, "the probe failed")


def test_never_retried_4xx_does_not_open_the_breaker(broker_factory, double):
    b = broker_factory(extra=BREAKER)
    double.configure(status=400)
    for _ in range(4):
        expect_error(ask(b), 502, "upstream_error")
    assert double.served() == 4


def test_breaker_is_per_api_key(broker_factory, double):
    # Tenants "one" and "two" share the key, "other" has its own: the double
    # answers 503 to every call whatever the key.
    b = broker_factory(extra=BREAKER, env={"OTHER_KEY": "ck_test_other_0123456789"},
                       policies={"one": ALLOW_POLICY, "two": ALLOW_POLICY, "other": ALLOW_POLICY},
                       tenants={"one": {}, "two": {}, "other": {"api_key": '{ env = "OTHER_KEY" }'}})

    def ask_tenant(t):
        return b.post("/v1/tenants/%s/token" % t, body={"user_id": "a"}, token=mint(sub="a"))

    double.configure(status=503)
    expect_error(ask_tenant("one"), 502, "upstream_error")
    expect_error(ask_tenant("two"), 502, "upstream_error")
    # Same endpoint and key: one breaker, open for both tenants.
    expect_error(ask_tenant("one"), 503, "upstream_unavailable")
    expect_error(ask_tenant("two"), 503, "upstream_unavailable")
    # Another key: its own breaker, still closed.
    expect_error(ask_tenant("other"), 502, "upstream_error")
    assert double.served() == 3


def test_breaker_off_with_zero(broker_factory, double):
    b = broker_factory(extra="courier.retries = 0; courier.breaker_failures = 0")
    double.configure(status=503)
    for _ in range(6):
        expect_error(ask(b), 502, "upstream_error")
    assert double.served() == 6


def test_double_next_and_connections(double):
    double.configure(status=503, next=1)
    r = request(double.port, "POST", "/auth/issue-token", {"scope": "user_id:a"},
                headers={"Authorization": "Bearer x"})
    assert r.status == 503
    r = request(double.port, "POST", "/auth/issue-token", {"scope": "user_id:a"},
                headers={"Authorization": "Bearer x"})
    assert r.status == 401  # back to normal: the key is wrong
    stats = request(double.port, "GET", "/_double/stats").json()
    assert stats["served"] == 2 and stats["connections"] >= 2


def test_double_fail_percent(double):
    def call():
        return request(double.port, "POST", "/auth/issue-token", {"scope": "user_id:a"},
                       headers={"Authorization": "Bearer x"}).status

    double.configure(status=503, fail_percent=0)
    assert [call() for _ in range(5)] == [401] * 5  # never forced
    double.configure(status=503, fail_percent=100)
    assert [call() for _ in range(5)] == [503] * 5
    double.configure(status=503, fail_percent=50)
    seen = {call() for _ in range(60)}
    assert seen == {401, 503}  # both, with overwhelming probability (1 - 2^-59)
