"""Courier (and JWKS) calls through a corporate egress proxy: HTTPS_PROXY,
NO_PROXY, a proxy that inspects TLS with its own CA (courier.ca_file).

The proxy is a small CONNECT proxy in Python on 127.0.0.1 (a free port),
counting the CONNECTs and the Proxy-Authorization it receives; nginx (TLS)
fronts the Courier double behind it. Every loop is bounded (a deadline per
connection, the proxy's lifetime).
"""
import base64
import os
import select
import socket
import threading
import time

import pytest

from conftest import Double, mint
from test_tls import NGINX, Nginx, make_pki, start_broker, system_bundle

pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed (scripts/install-deps.sh)")

PROXY_USER, PROXY_PASSWORD = "egress", "pr0xy-s3cret-9d2f"


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1. connects lists (target, the
    Proxy-Authorization header or None). With answer (e.g. b"407 ..."), it
    refuses every CONNECT with it; with to_port, it tunnels every CONNECT to
    127.0.0.1:to_port instead of the target (a TLS-inspecting proxy: the
    client meets a certificate of the proxy's CA)."""

    def __init__(self, answer=None, to_port=None, lifetime=60.0):
        self.answer, self.to_port = answer, to_port
        self.connects = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def url(self, user=PROXY_USER, password=PROXY_PASSWORD):
        return "http://%s:%s@127.0.0.1:%d" % (user, password, self.port)

    def _accept(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _serve(self, conn):
        up = None
        try:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            auth = None
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "proxy-authorization":
                    auth = v.strip()
            with self._lock:
                self.connects.append((target, auth))
            if method != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if self.answer:
                conn.sendall(b"HTTP/1.1 " + self.answer + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            up = socket.create_connection(("127.0.0.1", self.to_port) if self.to_port else (host, int(port)), 5)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._pump(conn, up)
        except OSError:
            pass
        finally:
            conn.close()
            if up:
                up.close()

    def _pump(self, a, b):
        end = min(time.monotonic() + 30, self._deadline)
        while not self._stop.is_set() and time.monotonic() < end:
            r, _, _ = select.select([a, b], [], [], 0.1)
            for s in r:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)

    def targets(self):
        with self._lock:
            return [t for t, _ in self.connects]

    def stop(self):
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(2)
        self.sock.close()


def proxy_env(proxy, no_proxy=""):
    env = {"HTTPS_PROXY": proxy.url(), "https_proxy": proxy.url(), "NO_PROXY": no_proxy, "no_proxy": no_proxy}
    return env


@pytest.fixture
def courier(tmp_path):
    """The double, behind nginx (TLS, a test CA); yields (double, ca, nginx)."""
    d = Double()
    ca, cert, key = make_pki(tmp_path)
    (tmp_path / "ng").mkdir()
    ng = Nginx(tmp_path / "ng", d.url, cert, key, keepalive_requests=1000)
    yield d, ca, ng
    ng.stop()
    d.stop()


@pytest.fixture
def proxies():
    started = []

    def make(**kw):
        p = ConnectProxy(**kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def test_courier_call_goes_through_https_proxy(tmp_path, courier, proxies):
    """HTTPS_PROXY with credentials: the call is tunnelled (one CONNECT to
    Courier's host:port, carrying the proxy credentials); they never appear
    in the broker's output."""
    double, ca, ng = courier
    proxy = proxies()
    b = start_broker(tmp_path, "b", ng.url, ca, env=proxy_env(proxy), extra="threads = 1")
    try:
        for i in range(3):
            r = b.post(body={"user_id": "u%d" % i}, token=mint(sub="u%d" % i))
            assert r.status == 200, r.body
        assert double.served() == 3
        assert proxy.targets() == ["127.0.0.1:%d" % ng.port]  # one loop: one tunnel, kept alive
        basic = "Basic " + base64.b64encode(("%s:%s" % (PROXY_USER, PROXY_PASSWORD)).encode()).decode()
        assert proxy.connects[0][1] == basic
    finally:
        b.stop()
    assert PROXY_PASSWORD not in b.p.text()


def test_proxy_refusal_is_a_502_without_credentials_in_logs(tmp_path, courier, proxies):
    """The proxy refuses the tunnel (407): no token, a 502, and the log line
    names the failure, never the proxy's password."""
    double, ca, ng = courier
    proxy = proxies(answer=b"407 Proxy Authentication Required")
    b = start_broker(tmp_path, "b", ng.url, ca, env=proxy_env(proxy), extra="courier.retries = 0")
    try:
        r = b.post(body={"user_id": "alice"}, token=mint())
        assert r.status == 502, r.body
        assert "token" not in r.json()
        assert double.served() == 0
        assert len(proxy.connects) == 1
        b.p.wait_for(r"407|[Pp]roxy", timeout=5)
    finally:
        b.stop()
    assert PROXY_PASSWORD not in b.p.text()


def test_no_proxy_bypasses_it(tmp_path, courier, proxies):
    """NO_PROXY names Courier's host: the call goes direct, no CONNECT."""
    double, ca, ng = courier
    proxy = proxies()
    b = start_broker(tmp_path, "b", ng.url, ca, env=proxy_env(proxy, no_proxy="127.0.0.1"))
    try:
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
        assert double.served() == 1
        assert proxy.connects == []
    finally:
        b.stop()


def test_tls_inspecting_proxy_with_ca_file_and_direct_hosts(tmp_path, courier, proxies):
    """A proxy that inspects TLS re-signs with its own CA: courier.ca_file
    holds that CA and calls through it succeed; a host in NO_PROXY, reached
    directly, is still verified against the system's bundle (the test CA
    stands in for it), as ca_file adds to it. Without ca_file, the inspected
    route is refused (certificate)."""
    double, ca, ng = courier
    (tmp_path / "corp").mkdir()
    corp_ca, corp_cert, corp_key = make_pki(tmp_path / "corp", "corporate inspecting CA")
    (tmp_path / "inspect").mkdir()
    inspector = Nginx(tmp_path / "inspect", double.url, corp_cert, corp_key, keepalive_requests=1000)
    proxy = proxies(to_port=inspector.port)
    env = dict(proxy_env(proxy, no_proxy="localhost"), **system_bundle(ca))
    tenants = {"default": {}, "direct": {"policy": "default",
                                         "extra": "courier = { base_url = %r }," % ("https://localhost:%d" % ng.port)}}
    b = start_broker(tmp_path, "b", ng.url, corp_ca, env=env, tenants=tenants)
    try:
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
        assert b.post("/v1/tenants/direct/token", body={"user_id": "bob"}, token=mint(sub="bob")).status == 200
        assert proxy.targets() == ["127.0.0.1:%d" % ng.port]
        assert len(inspector.lines()) == 1 and len(ng.lines()) == 1
        b.stop()
        b = start_broker(tmp_path, "b2", ng.url, env=env, tenants=tenants, extra="courier.retries = 0")
        assert b.post(body={"user_id": "alice"}, token=mint()).status == 502
        b.p.wait_for(r"certificate", timeout=5)
    finally:
        b.stop()
        inspector.stop()
