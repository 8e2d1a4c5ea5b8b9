"""The cluster over TLS (rediss://, issue 16): redis-server with TLS only
(`--port 0 --tls-port FREE`), its certificate from a test CA made with
openssl at test time, and brokers that trust that CA through
cluster.redis.ca_file. The shared per-requester limit holds across two
brokers, `deny`/`allow` (themselves over TLS) reach both, and a broker that
trusts another CA never talks to that Redis (nor does `deny`): no way
around the verification.
"""
import json
import socket
import ssl
import subprocess
import time

import pytest

from conftest import metrics, mint, reload_ok, wait_metric
from redis_server import Client, RedisServer, free_port
from test_cluster import ask, cli, wait_status

pytestmark = pytest.mark.skipif(not RedisServer.available(),
                                reason="redis-server is not installed (scripts/install-deps.sh installs it)")

REDIS_PASSWORD = "redis-tls-pass-91c2e7"
PROPAGATION = 1.0  # seconds: every broker applies a deny within this
PER_REQUESTER_5 = "rate_limit = { per_requester = { per_second = 0.01, burst = 5 } },"


def openssl(cwd, *args):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d):
    """d/ca.pem (a test CA), d/other-ca.pem, d/redis.pem/.key for
    127.0.0.1 and d/client.pem/.key (a broker's client certificate), both
    signed by ca.pem."""
    d.mkdir(exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ci-redis-ca")
    openssl(d, "req", "-x509", *ec, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2",
            "-subj", "/CN=another-ca")
    for name, san in (("redis", "IP:127.0.0.1,DNS:localhost"), ("client", "DNS:broker")):
        openssl(d, "req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
        (d / (name + ".ext")).write_text("subjectAltName=%s\n" % san)
        openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")
    (d / "client.key").chmod(0o600)
    return d


class TlsClient(Client):
    """The suite's RESP client, over TLS verified with the test CA."""

    def __init__(self, port, ca, password=None, timeout=5.0):
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(ca.parent / "client.pem"), str(ca.parent / "client.key"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.buf = b""
        if password is not None:
            self.call("AUTH", password)


class TlsRedis:
    """redis-server with TLS only, on a free port of 127.0.0.1; with
    client_certs, it asks every client for a certificate signed by the CA
    (`tls-auth-clients yes`, Redis's default with TLS)."""

    def __init__(self, d, client_certs=False):
        self.ca = d / "ca.pem"
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(d / "redis.pem"), "--tls-key-file", str(d / "redis.key"),
             "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "yes" if client_certs else "no",
             "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                c = self.client()
                c.call("PING")
                c.close()
                return
            except (OSError, ssl.SSLError):
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise AssertionError("redis-server with TLS did not answer")

    def client(self):
        return TlsClient(self.port, self.ca, REDIS_PASSWORD)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def tls(tmp_path):
    return make_ca(tmp_path / "pki")


@pytest.fixture
def redis(tls):
    r = TlsRedis(tls)
    yield r
    r.stop()


def cluster_block(port, ca_file, name="tls", identity=None):
    """identity: (cert, key) paths the broker presents as its client certificate."""
    pair = ""
    if identity:
        pair = "cert = %s, key = { file = %s }, " % (json.dumps(str(identity[0])), json.dumps(str(identity[1])))
    return ('cluster = { redis = { url = "rediss://127.0.0.1:%d/0", ca_file = %s, %s'
            'password = { env = "REDIS_PASSWORD" } }, name = "%s" }' % (port, json.dumps(str(ca_file)), pair, name))


def start_brokers(broker_factory, redis, ca_file, n=2, identity=None, **kw):
    return [broker_factory(extra=cluster_block(redis.port, ca_file, identity=identity),
                           env={"REDIS_PASSWORD": REDIS_PASSWORD}, **kw)
            for _ in range(n)]


def connected(b, n=2):
    """Every loop of b (threads = 2 by default) is connected to Redis."""
    wait_metric(b, "broker_cluster_redis_connections", lambda v: v == n, timeout=10)


def test_shared_limit_over_tls(broker_factory, double, redis, tls):
    # Old code: rediss:// was refused at load, so no broker started.
    bs = start_brokers(broker_factory, redis, tls / "ca.pem", tenants={"default": {"extra": PER_REQUESTER_5}})
    for b in bs:
        connected(b)
        assert b.get("/readyz").json().get("cluster") == "up"
    codes = [bs[i % 2].post(body={"user_id": "alice"}, token=mint("mallory")).status for i in range(10)]
    assert codes == [200] * 5 + [429] * 5, (codes, bs[0].p.text()[-3000:])
    shared = sum(metrics(b).get('broker_cluster_rate_checks_total{by="shared"}', 0) for b in bs)
    assert shared == 10, shared
    # The buckets are in the TLS Redis, under the cluster's prefix.
    keys = redis.client().call("KEYS", "*")
    assert keys and all(k.startswith(b"courier-broker:tls:rl:") for k in keys), keys


def test_deny_and_allow_over_tls_reach_both(broker_factory, double, redis, tls):
    bs = start_brokers(broker_factory, redis, tls / "ca.pem")
    for b in bs:
        connected(b)
        assert ask(b, "eve").status == 200
    r = cli(bs[0], "deny", "--tenant", "default", "eve")
    assert r.returncode == 0, r.stderr
    assert "1 of 1 user(s) added" in r.stdout and "2 broker(s) notified" in r.stdout, r.stdout
    wait_status(bs, "eve", 403, PROPAGATION)
    assert redis.client().call("SMEMBERS", "courier-broker:tls:deny:default") == [b"eve"]
    r = cli(bs[1], "allow", "--tenant", "default", "eve")
    assert r.returncode == 0, r.stderr
    wait_status(bs, "eve", 200, PROPAGATION)
    # A broker started now loads the list over TLS too.
    assert cli(bs[0], "deny", "--tenant", "default", "mallory").returncode == 0
    late = start_brokers(broker_factory, redis, tls / "ca.pem", n=1)[0]
    connected(late)
    assert ask(late, "mallory").status == 403


def test_another_ca_never_talks_to_redis(broker_factory, double, redis, tls):
    """Trusting another CA: the broker starts and serves on its own state,
    says the cluster is down, and neither it nor `deny` ever reaches Redis."""
    b = start_brokers(broker_factory, redis, tls / "other-ca.pem", n=1)[0]
    time.sleep(1.0)  # several connection attempts, each refused
    assert metrics(b).get("broker_cluster_redis_connections") == 0
    assert b.get("/readyz").json().get("cluster") == "down"
    r = ask(b, "alice")
    assert r.status == 200, (r.body, b.p.text()[-3000:])
    r = cli(b, "deny", "--tenant", "default", "alice")
    assert r.returncode == 1
    assert "certificate is refused" in r.stderr, r.stderr
    assert REDIS_PASSWORD not in r.stderr + r.stdout
    assert redis.client().call("KEYS", "*") == []
    log = b.p.text()
    assert "certificate is refused" in log, log
    assert REDIS_PASSWORD not in log


def test_a_reload_that_changes_tls_keeps_the_cluster_it_started_with(broker_factory, double, redis, tls):
    """Another ca_file (or redis:// for rediss://) is a change of cluster: warned
    about, and the connections made at start stay as they are."""
    b = start_brokers(broker_factory, redis, tls / "ca.pem", n=1)[0]
    connected(b)
    (tls / "copy-ca.pem").write_bytes((tls / "ca.pem").read_bytes())
    b.config.write_text(b.config_text.replace(str(tls / "ca.pem"), str(tls / "copy-ca.pem")))
    reload_ok(b)
    b.p.wait_for(r"reload: cluster changed; the broker keeps the cluster it started with until a restart")
    assert metrics(b).get("broker_cluster_redis_connections") == 2


def test_a_ca_file_changed_in_place_is_a_change_of_cluster(broker_factory, double, redis, tls):
    """The same ca_file path with other content (a CA added, say) is a
    change too: warned about at the reload; a reload with nothing changed
    warns nothing."""
    ca = tls / "copy-ca.pem"
    ca.write_bytes((tls / "ca.pem").read_bytes())
    b = start_brokers(broker_factory, redis, ca, n=1)[0]
    connected(b)
    reload_ok(b)
    assert "cluster changed" not in b.p.text()
    ca.write_bytes((tls / "ca.pem").read_bytes() + (tls / "other-ca.pem").read_bytes())
    reload_ok(b)
    b.p.wait_for(r"reload: cluster changed; the broker keeps the cluster it started with until a restart")
    assert metrics(b).get("broker_cluster_redis_connections") == 2


def test_client_certificate_when_redis_asks_for_one(broker_factory, double, tls):
    """A Redis that asks every client for a certificate (tls-auth-clients
    yes): a broker without one never gets in (down, serving on its own
    state); brokers presenting cluster.redis.cert share the limit, and
    `deny` (which presents it too) reaches them."""
    r = TlsRedis(tls, client_certs=True)
    try:
        bare = start_brokers(broker_factory, r, tls / "ca.pem", n=1)[0]
        bs = start_brokers(broker_factory, r, tls / "ca.pem", identity=(tls / "client.pem", tls / "client.key"),
                           tenants={"default": {"extra": PER_REQUESTER_5}})
        for b in bs:
            connected(b)
            assert b.get("/readyz").json().get("cluster") == "up"
        assert metrics(bare).get("broker_cluster_redis_connections") == 0
        assert bare.get("/readyz").json().get("cluster") == "down"
        assert cli(bare, "deny", "--tenant", "default", "alice").returncode == 1
        codes = [bs[i % 2].post(body={"user_id": "alice"}, token=mint("mallory")).status for i in range(10)]
        assert codes == [200] * 5 + [429] * 5, (codes, bs[0].p.text()[-3000:])
        res = cli(bs[0], "deny", "--tenant", "default", "eve")
        assert res.returncode == 0, res.stderr
        wait_status(bs, "eve", 403, PROPAGATION)
        assert r.client().call("SMEMBERS", "courier-broker:tls:deny:default") == [b"eve"]
        for b in bs + [bare]:
            log = b.p.text()
            assert "BEGIN" not in log and REDIS_PASSWORD not in log
        # The certificate renewed in place (same file, same key, a new
        # certificate) is a change of cluster: warned about, and the
        # connections made at start stay.
        b = bs[0]
        openssl(tls, "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "client.pem", "-days", "3", "-extfile", "client.ext")
        reload_ok(b)
        b.p.wait_for(r"reload: cluster changed; the broker keeps the cluster it started with until a restart")
        assert metrics(b).get("broker_cluster_redis_connections") == 2
    finally:
        r.stop()
