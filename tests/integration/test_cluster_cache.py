"""The cluster's shared token cache (issue 16): tenants with token_cache and
a cluster.cache_key reuse one token for an identical grant across brokers;
Redis holds it sealed (AES-GCM) under a name that reveals nothing."""
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import COURIER_KEY, metrics, mint, wait_metric
from test_cluster_rate import Redis, redis  # noqa: F401 (the fixture)

CACHE_KEY = "5f" * 32
OTHER_KEY = "a0" * 32


def cluster(port, key_env="CACHE_KEY"):
    return ('cluster = { redis = { url = "redis://127.0.0.1:%d/0" }, name = "c", '
            'cache_key = { env = "%s" } }\n' % (port, key_env))


def start(broker_factory, redis, key=CACHE_KEY):
    b = broker_factory(tenants={"default": {"extra": "token_cache = true,"}}, extra=cluster(redis.port),
                       env={"CACHE_KEY": key})
    wait_metric(b, "broker_cluster_redis_connections", lambda v: v == 2, timeout=10)
    return b


def wait_cached(redis, n, timeout=5.0):
    """Until Redis holds n cached tokens (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len([k for k in redis.cli("--scan").split() if ":tc:" in k]) >= n:
            return
        time.sleep(0.02)
    raise AssertionError("Redis does not hold %d cached token(s) after %.1f s" % (n, timeout))


def test_identical_grant_served_once_across_brokers(broker_factory, double, redis):
    # Old code: each broker called Courier for the same grant.
    a, b = start(broker_factory, redis), start(broker_factory, redis)
    r1 = a.post(body={"user_id": "alice-42"}, token=mint("alice-42"))
    assert r1.status == 200, r1.body
    assert double.served() == 1
    wait_cached(redis, 1)  # the sealed SET may land just after a's answer
    r2 = b.post(body={"user_id": "alice-42"}, token=mint("alice-42"))
    assert r2.status == 200, r2.body
    assert r2.json()["token"] == r1.json()["token"]
    assert double.served() == 1
    # Another grant is another token.
    assert b.post(body={"user_id": "bob-7"}, token=mint("bob-7")).status == 200
    assert double.served() == 2
    wait_cached(redis, 2)
    # Nothing readable in Redis names a user, a key or a token.
    keys = redis.cli("--scan").split()
    cached = [k for k in keys if ":tc:" in k]
    assert len(cached) == 2, keys
    dump = subprocess.run(["redis-cli", "-p", str(redis.port), "--no-raw", "MGET"] + cached,
                          capture_output=True, timeout=10).stdout
    for secret in (r1.json()["token"], r1.json()["token"].split(".")[1], "alice-42", COURIER_KEY, CACHE_KEY):
        assert secret.encode() not in dump, secret
        assert not any(secret in k for k in keys), (secret, keys)
    for k in cached:
        assert int(redis.cli("PTTL", k)) > 0, k


def test_another_cache_key_cannot_use_it(broker_factory, double, redis):
    a = start(broker_factory, redis)
    assert a.post(body={"user_id": "carol"}, token=mint("carol")).status == 200
    c = start(broker_factory, redis, key=OTHER_KEY)
    r = c.post(body={"user_id": "carol"}, token=mint("carol"))
    assert r.status == 200, r.body
    assert double.served() == 2


def test_a_shared_hit_counts_once(broker_factory, double, redis):
    # Old code: a token found in Redis counted a miss, then a hit.
    a, b = start(broker_factory, redis), start(broker_factory, redis)
    assert a.post(body={"user_id": "dora"}, token=mint("dora")).status == 200
    for _ in range(50):  # the SET nobody waits for, bounded
        if any(":tc:" in k for k in redis.cli("--scan").split()):
            break
        time.sleep(0.1)
    r = b.post(body={"user_id": "dora"}, token=mint("dora"))
    assert r.status == 200, r.body
    assert double.served() == 1
    m = metrics(b)
    assert m.get('broker_token_cache_total{result="hit"}', 0) == 1, m
    assert m.get('broker_token_cache_total{result="miss"}', 0) == 0, m
    m = metrics(a)
    assert m.get('broker_token_cache_total{result="miss"}', 0) == 1, m


def test_identical_grants_on_one_loop_share_one_call(broker_factory, double, redis):
    # Old code: each asked Redis, missed, and called Courier: 4 calls.
    b = broker_factory(tenants={"default": {"extra": "token_cache = true,"}},
                       extra=cluster(redis.port) + "threads = 1\n", env={"CACHE_KEY": CACHE_KEY})
    wait_metric(b, "broker_cluster_redis_connections", lambda v: v == 1, timeout=10)
    double.configure(latency_ms=1000)
    barrier = threading.Barrier(4)

    def one(_):
        barrier.wait(5)
        return b.post(body={"user_id": "erin"}, token=mint("erin"), timeout=15)

    with ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(one, range(4)))
    assert [r.status for r in rs] == [200] * 4, [r.body for r in rs]
    assert len({r.json()["token"] for r in rs}) == 1
    assert double.served() == 1


def test_cache_behind_the_shared_rate_limits(broker_factory, double, redis):
    # Redis's rate answer hands the request back to the handler for the
    # caches (they answer themselves); a refusal decided inside the reply is
    # answered too.
    extra = "token_cache = true, rate_limit = { per_requester = { per_second = 0.01, burst = 3 } },"
    a, b = [broker_factory(tenants={"default": {"extra": extra}}, extra=cluster(redis.port),
                           env={"CACHE_KEY": CACHE_KEY}) for _ in range(2)]
    for x in (a, b):
        wait_metric(x, "broker_cluster_redis_connections", lambda v: v == 2, timeout=10)
    r1 = a.post(body={"user_id": "fay"}, token=mint("fay"))
    assert r1.status == 200, r1.body
    for _ in range(50):  # the SET nobody waits for, bounded
        if any(":tc:" in k for k in redis.cli("--scan").split()):
            break
        time.sleep(0.1)
    for x in (b, a):
        r = x.post(body={"user_id": "fay"}, token=mint("fay"))
        assert r.status == 200, r.body
        assert r.json()["token"] == r1.json()["token"]
    assert double.served() == 1
    r = b.post(body={"user_id": "fay"}, token=mint("fay"))
    assert r.status == 429, r.body
    assert r.header("Retry-After")
    assert metrics(b)['broker_cluster_rate_checks_total{by="shared"}'] == 2
