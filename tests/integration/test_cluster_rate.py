"""Shared rate limits across brokers on one Redis (issue 16).

A real redis-server on a free loopback port; brokers with the same
`cluster` block. The per-requester limit holds across all of them; Redis
killed (or stalled) mid-load costs no request, the local buckets decide
meanwhile, and the shared limits resume once Redis is back. A limit high
enough to lease (cluster.rate_lease_ms) holds within its stated bound.
"""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import mint, metrics, wait_metric


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Redis:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port)] + list(args), capture_output=True,
                              text=True, timeout=10).stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


def cluster(port, name="t", redis_extra=""):
    return 'cluster = { redis = { url = "redis://127.0.0.1:%d/0", %s }, name = "%s" }\n' % (port, redis_extra, name)


def connected(b, n=2):
    """Every loop of b (threads = 2 by default) is connected to Redis."""
    wait_metric(b, "broker_cluster_redis_connections", lambda v: v == n, timeout=10)


def checks(b, by):
    return metrics(b).get('broker_cluster_rate_checks_total{by="%s"}' % by, 0)


PER_REQUESTER_5 = "rate_limit = { per_requester = { per_second = 0.01, burst = 5 } },"
GENEROUS = "rate_limit = { per_second = 100000, burst = 100000 },"


def test_per_requester_limit_holds_across_three_brokers(broker_factory, double, redis):
    # Old code: each broker kept its own bucket and let the requester through 15 times.
    bs = [broker_factory(tenants={"default": {"extra": PER_REQUESTER_5}}, extra=cluster(redis.port))
          for _ in range(3)]
    for b in bs:
        connected(b)
    codes = [bs[i % 3].post(body={"user_id": "alice"}, token=mint("mallory")).status for i in range(15)]
    assert codes.count(200) == 5 and codes.count(429) == 10, codes
    assert codes[:5] == [200] * 5, codes
    # Another requester has a bucket of its own.
    assert bs[1].post(body={"user_id": "bob"}, token=mint("bob")).status == 200
    assert sum(checks(b, "shared") for b in bs) == 16
    assert sum(checks(b, "local") for b in bs) == 0
    # Keys: under the cluster's prefix, all with a TTL, no subject in clear.
    keys = redis.cli("--scan").split()
    assert keys and all(k.startswith("courier-broker:t:rl:") for k in keys), keys
    assert not any("mallory" in k or "bob" in k for k in keys), keys
    for k in keys:
        assert int(redis.cli("PTTL", k)) > 0, k


def test_redis_killed_mid_load_then_back(broker_factory, double, redis):
    port = redis.port
    bs = [broker_factory(tenants={"default": {"extra": GENEROUS}}, extra=cluster(port)) for _ in range(2)]
    for b in bs:
        connected(b)
    statuses, stop = [], threading.Event()

    def load(b, who):
        while not stop.is_set() and len(statuses) < 5000:
            statuses.append(b.post(body={"user_id": who}, token=mint(who)).status)

    threads = [threading.Thread(target=load, args=(b, "u%d" % i)) for i, b in enumerate(bs)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        redis.stop()
        time.sleep(0.5)
        # Stalled rather than gone: answered within the deadline, by the local buckets.
        redis = Redis(port)
        for b in bs:
            connected(b)
        redis.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        redis.proc.send_signal(signal.SIGCONT)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    try:
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        for b in bs:
            assert checks(b, "local") > 0
            # The outage is said once per outage, not once per request.
            assert b.p.text().count("is unavailable") <= 3, b.p.text()[-3000:]
            connected(b)
        # Shared again: a requester's burst of 5 holds across both brokers.
        tenants = {"default": {"extra": PER_REQUESTER_5}}
        cs = [broker_factory(tenants=tenants, extra=cluster(port)) for _ in range(2)]
        for b in cs:
            connected(b)
        codes = [cs[i % 2].post(body={"user_id": "x"}, token=mint("eve")).status for i in range(8)]
        assert codes.count(200) == 5, codes
    finally:
        redis.stop()


def test_starts_and_serves_without_redis(broker_factory, double):
    port = free_port()
    # A generous deadline for the check once Redis is up: the default 50 ms
    # was missed under ASan on a busy machine (the check then went local,
    # shared == 0); while Redis is down the checks go local at once anyway.
    b = broker_factory(tenants={"default": {"extra": PER_REQUESTER_5}},
                       extra=cluster(port, redis_extra="rate_timeout_ms = 5000"))
    codes = [b.post(body={"user_id": "alice"}, token=mint("zed")).status for _ in range(7)]
    # The local buckets hold meanwhile.
    assert codes == [200] * 5 + [429] * 2, codes
    assert checks(b, "local") == 7
    assert "is unavailable" in b.p.text()
    r = Redis(port)
    try:
        connected(b)
        assert b.post(body={"user_id": "alice"}, token=mint("amy")).status == 200
        assert checks(b, "shared") == 1
    finally:
        r.stop()


def test_leased_tenant_limit_holds_across_three_brokers(broker_factory, double, redis):
    # A tenant limit high enough to lease (300/s, burst 100: leases of up to
    # 3 tokens for 10 ms): three brokers under a burst of requests admit no
    # more than the burst, plus the refill while they ran, plus what a lease
    # may add (per_second * 10 / 1000). Old code: no lease (by="lease" is 0).
    per_second, burst, lease_ms = 300, 100, 10
    tenants = {"default": {"extra": "rate_limit = { per_second = %d, burst = %d }," % (per_second, burst)}}
    bs = [broker_factory(tenants=tenants, extra="threads = 1\n" + cluster(redis.port)) for _ in range(3)]
    for b in bs:
        connected(b, n=1)
    tokens = [mint("u%d" % i) for i in range(12)]
    codes, lock = [], threading.Lock()

    def load(i):
        b = bs[i % 3]
        while True:
            with lock:
                if len(codes) >= 900:
                    return
            status = b.post(body={"user_id": "u%d" % i}, token=tokens[i]).status
            with lock:
                codes.append(status)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(12)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - t0
    admitted = codes.count(200)
    assert set(codes) <= {200, 429}, {s: codes.count(s) for s in set(codes)}
    bound = burst + per_second * lease_ms / 1000 + per_second * elapsed
    assert admitted <= bound, (admitted, bound, elapsed)
    # Unspent leased tokens are lost (under-admits), never more than a few.
    assert admitted >= min(burst, len(codes)) - 3 * 3 * 2, (admitted, elapsed)
    assert codes.count(429) > 0, (admitted, elapsed)
    assert sum(checks(b, "lease") for b in bs) > 0, [metrics(b) for b in bs]
    assert sum(checks(b, "local") for b in bs) == 0
    # The refusals were Redis's: a lease never refuses on its own.
    assert sum(checks(b, "shared") + checks(b, "lease") for b in bs) == len(codes)
