"""The cluster (cluster.redis): brokers sharing one Redis share one deny list.

redis-server (Debian's, installed by scripts/install-deps.sh) is started by
each test on 127.0.0.1 and a free port, with a password and an append-only
file. Every wait is bounded; the one bound that is a product promise (a
`deny` reaches every broker within a second) is the brief's own.
"""
import json
import shutil
import subprocess
import threading
import time

import pytest

from conftest import APP_SECRET, BROKER_BIN, COURIER_KEY, metrics, mint, reload_ok, wait_metric
from redis_server import RedisServer, free_port

pytestmark = pytest.mark.skipif(not RedisServer.available(),
                                reason="redis-server is not installed (scripts/install-deps.sh installs it)")

REDIS_PASSWORD = "redis-pass-5b1f0c9e7a3d"
PROPAGATION = 1.0  # seconds: every broker applies a deny within this
RECONNECT = 15.0   # seconds: backoff is at most 5 s plus jitter; generous for a loaded machine


@pytest.fixture
def redis(tmp_path):
    r = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD).start()
    yield r
    r.stop()


def cluster_block(port, name="ci"):
    return ('cluster = { redis = { url = "redis://127.0.0.1:%d/0", password = { env = "REDIS_PASSWORD" } }, '
            'name = "%s" }' % (port, name))


def start_brokers(broker_factory, port, n=3, **kw):
    return [broker_factory(extra=cluster_block(port), env={"REDIS_PASSWORD": REDIS_PASSWORD}, **kw)
            for _ in range(n)]


def ask(b, user):
    return b.post(body={"user_id": user}, token=mint(sub=user))


def cli(b, *args):
    """courier-broker deny|allow with b's config and environment."""
    return subprocess.run([BROKER_BIN, args[0], "-c", str(b.config)] + list(args[1:]), env=b.env,
                          capture_output=True, text=True, timeout=30)


def wait_status(brokers, user, status, timeout):
    """Polls every broker until each answers `status` for user; returns the
    seconds it took, or fails naming the brokers that did not."""
    t0 = time.monotonic()
    pending = list(brokers)
    while pending and time.monotonic() - t0 < timeout:
        pending = [b for b in pending if ask(b, user).status != status]
        if pending:
            time.sleep(0.01)
    assert not pending, "%d broker(s) still not answering %d for %s after %.1f s" % (
        len(pending), status, user, timeout)
    return time.monotonic() - t0


def readyz(b):
    r = b.get("/readyz")
    assert r.status == 200, (r.status, r.body)
    return r.json()


# ------------------------------------------------------------ deny and allow


def test_deny_reaches_three_brokers_within_a_second_and_allow_undoes_it(broker_factory, redis):
    bs = start_brokers(broker_factory, redis.port)
    for b in bs:
        assert readyz(b) == {"status": "ready", "cluster": "up"}
        assert ask(b, "alice").status == 200
        assert metrics(b)["broker_cluster_up"] == 1

    p = cli(bs[0], "deny", "--tenant", "default", "alice", "mallory")
    assert p.returncode == 0, p.stderr
    assert "2 of 2 user(s) added" in p.stdout and "3 broker(s) notified" in p.stdout, p.stdout
    took = wait_status(bs, "alice", 403, PROPAGATION)
    print("deny reached 3 brokers in %.3f s" % took)
    for b in bs:
        r = ask(b, "alice")
        assert r.status == 403 and r.json()["error"] == "user_denied", r.body
        assert ask(b, "bob").status == 200  # only the users named
        assert metrics(b)["broker_cluster_deny_entries"] == 2
    # The policy never ran for a denied user; the log says why.
    assert any(l.get("status") == 403 and "deny list" in (l.get("reason") or "")
               for l in bs[0].p.json_lines() if l.get("event") == "token_request"), bs[0].p.text()[-2000:]

    p = cli(bs[1], "allow", "--tenant", "default", "alice")
    assert p.returncode == 0, p.stderr
    assert "1 of 1 user(s) removed" in p.stdout and "(1 on it now)" in p.stdout, p.stdout
    took = wait_status(bs, "alice", 200, PROPAGATION)
    print("allow reached 3 brokers in %.3f s" % took)
    for b in bs:
        assert ask(b, "mallory").status == 403
        assert metrics(b)["broker_cluster_denied_total"] >= 1


def test_deny_is_per_tenant(broker_factory, redis):
    tenants = {"default": {}, "acme": {"policy": "default"}}
    b = start_brokers(broker_factory, redis.port, n=1, tenants=tenants)[0]
    p = cli(b, "deny", "--tenant", "acme", "alice")
    assert p.returncode == 0, p.stderr
    deadline = time.monotonic() + PROPAGATION
    while time.monotonic() < deadline and b.post("/v1/tenants/acme/token", body={"user_id": "alice"},
                                                     token=mint("alice")).status != 403:
        time.sleep(0.01)
    assert b.post("/v1/tenants/acme/token", body={"user_id": "alice"}, token=mint("alice")).status == 403
    assert ask(b, "alice").status == 200  # tenant default: not on its list
    keys = redis.client().dump_all()
    assert set(keys) == {b"courier-broker:ci:deny:acme", b"courier-broker:ci:deny-tenants"}, keys


def test_deny_and_allow_refuse_what_they_cannot_do(broker_factory, redis, tmp_path):
    b = start_brokers(broker_factory, redis.port, n=1)[0]
    bad = cli(b, "deny", "--tenant", "default", "has space")
    assert bad.returncode == 1 and "user id 1 is not valid" in bad.stderr, bad.stderr
    bad = cli(b, "deny", "--tenant", "nobody", "alice")
    assert bad.returncode == 1 and "no tenant nobody" in bad.stderr, bad.stderr
    bad = cli(b, "deny", "--tenant", "default")
    assert bad.returncode == 2 and "usage" in bad.stderr
    bad = subprocess.run([BROKER_BIN, "deny", "-c", str(b.config), "--tenant", "default", "alice"],
                         env=dict(b.env, REDIS_PASSWORD="wrong"), capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "AUTH" in bad.stderr, bad.stderr
    assert "wrong" not in bad.stderr and REDIS_PASSWORD not in bad.stderr
    assert redis.client().dump_all() == {}  # nothing was written
    # A configuration without a cluster: the deny list has nowhere to live.
    alone = broker_factory()
    bad = cli(alone, "deny", "--tenant", "default", "alice")
    assert bad.returncode == 1 and "no cluster block" in bad.stderr, bad.stderr


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_cluster_metrics(broker_factory, redis):
    b = start_brokers(broker_factory, redis.port, n=1)[0]
    assert cli(b, "deny", "--tenant", "default", "alice").returncode == 0
    wait_status([b], "alice", 403, PROPAGATION)
    text = b.get("/metrics").body
    assert b"broker_cluster_up 1" in text and b"broker_cluster_denied_total 1" in text, text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


def test_without_a_cluster_nothing_changes(broker_factory):
    b = broker_factory()
    assert b.get("/readyz").json() == {"status": "ready"}
    assert not [k for k in metrics(b) if k.startswith("broker_cluster")]
    assert "cluster" not in b.p.text()


def test_a_reload_keeps_the_cluster_it_started_with(broker_factory, redis):
    b = start_brokers(broker_factory, redis.port, n=1)[0]
    b.config.write_text(b.config_text.replace('name = "ci"', 'name = "other"'))
    reload_ok(b)
    b.p.wait_for(r"reload: cluster changed; the broker keeps the cluster it started with until a restart")
    # Still following cluster ci: a deny there reaches it.
    b.config.write_text(b.config_text)
    assert cli(b, "deny", "--tenant", "default", "alice").returncode == 0
    wait_status([b], "alice", 403, PROPAGATION)


# ------------------------------------------------------------ Redis away


def test_redis_killed_and_restarted_mid_load(broker_factory, redis):
    bs = start_brokers(broker_factory, redis.port)
    assert cli(bs[0], "deny", "--tenant", "default", "alice").returncode == 0
    wait_status(bs, "alice", 403, PROPAGATION)

    failures, done, stop = [], [0], threading.Event()

    def load(b):
        deadline = time.monotonic() + 120  # bounded even if the test fails midway
        while not stop.is_set() and time.monotonic() < deadline:
            r = ask(b, "bob")
            done[0] += 1
            if r.status != 200:
                failures.append((r.status, r.body))

    threads = [threading.Thread(target=load, args=(b,)) for b in bs]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        redis.kill()
        for b in bs:
            wait_metric(b, "broker_cluster_up", lambda v: v == 0, timeout=RECONNECT)
            assert readyz(b) == {"status": "ready", "cluster": "down"}
            assert ask(b, "alice").status == 403  # the last list stays in force
        # Changed while the brokers were away, announced to nobody: a broker
        # that comes back reloads the whole list.
        redis.aof_append("SADD", "courier-broker:ci:deny:default", "carol")
        time.sleep(0.3)
        redis.start()
        for b in bs:
            wait_metric(b, "broker_cluster_up", lambda v: v == 1, timeout=RECONNECT)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:5]
    assert done[0] > 0
    print("%d requests for an unaffected user during the outage, none failed" % done[0])
    for b in bs:
        assert readyz(b) == {"status": "ready", "cluster": "up"}
        assert ask(b, "alice").status == 403
        assert ask(b, "carol").status == 403
        log = b.p.text()
        # Once when it went, once when it came back.
        assert log.count("unreachable") == 1, [l for l in log.splitlines() if "cluster ci" in l]
        assert log.count("reachable again") == 1, [l for l in log.splitlines() if "cluster ci" in l]


def test_a_broker_started_while_redis_is_down_serves(broker_factory, tmp_path):
    port = free_port()
    b = start_brokers(broker_factory, port, n=1)[0]
    assert ask(b, "alice").status == 200
    assert readyz(b) == {"status": "ready", "cluster": "down"}
    assert metrics(b)["broker_cluster_up"] == 0
    # Redis arrives later with alice on the list: the broker joins by itself.
    r = RedisServer(tmp_path / "late", password=REDIS_PASSWORD, port=port).start()
    try:
        p = cli(b, "deny", "--tenant", "default", "alice")
        assert p.returncode == 0, p.stderr
        wait_metric(b, "broker_cluster_up", lambda v: v == 1, timeout=RECONNECT)
        # Heard as a message, or loaded whole at the connect: either way, soon.
        wait_status([b], "alice", 403, PROPAGATION)
        assert ask(b, "bob").status == 200
        assert b.p.text().count("unreachable") == 1, b.p.text()[-3000:]
    finally:
        r.stop()


# ------------------------------------------------------------ what Redis holds


def test_redis_holds_no_secret(broker_factory, redis):
    bs = start_brokers(broker_factory, redis.port, n=2)
    tokens, creds = [], []
    for i, b in enumerate(bs):
        for user in ("bob", "dave"):
            cred = mint(sub=user)
            creds.append(cred)
            r = b.post(body={"user_id": user}, token=cred)
            assert r.status == 200, r.body
            tokens.append(r.json()["token"])
    assert cli(bs[0], "deny", "--tenant", "default", "alice", "erin").returncode == 0
    wait_status(bs, "alice", 403, PROPAGATION)
    everything = redis.client().dump_all()
    assert everything, "nothing in Redis: the scan would prove nothing"
    blob = b"\n".join([k for k in everything] + [v for vs in everything.values() for v in vs])
    secrets = [COURIER_KEY, APP_SECRET, REDIS_PASSWORD] + tokens + creds
    for s in secrets:
        assert s.encode() not in blob
        # Nor any sizeable piece of one (a token's signature, a key's tail).
        for piece in (s[-16:], s[:16]):
            assert piece.encode() not in blob, piece
    for k in everything:
        assert k.startswith(b"courier-broker:ci:"), k


def test_a_cluster_refusal_is_audited(broker_factory, redis):
    """A user refused by the cluster's deny list gets an audit line (deny,
    user_denied, the verified identity), as the kill switch's refusals do."""
    extra = cluster_block(redis.port) + '\naudit_log = { file = "audit.jsonl", inputs = true }'
    b = broker_factory(extra=extra, env={"REDIS_PASSWORD": REDIS_PASSWORD})
    assert cli(b, "deny", "--tenant", "default", "mallory").returncode == 0
    wait_status([b], "mallory", 403, PROPAGATION * 3)
    log = b.dir / "audit.jsonl"
    deadline = time.monotonic() + 5
    while (not log.exists() or not log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    refused = [l for l in lines if l.get("error") == "user_denied"]
    assert refused and refused[0]["decision"] == "deny", lines
    assert refused[0]["request"]["identity"]["authenticated"] is True, refused[0]
