"""Fixtures that start the real broker and the Courier test double on loopback.

Every server binds 127.0.0.1 with an ephemeral port (port 0) and reports the
port it got; every wait is bounded. The binaries come from BROKER_BIN and
DOUBLE_BIN (set by `make test` / `make check`), or build/ by default.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import jwt as pyjwt
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BROKER_BIN = os.environ.get("BROKER_BIN", os.path.join(ROOT, "build", "courier-broker"))
DOUBLE_BIN = os.environ.get("DOUBLE_BIN", os.path.join(ROOT, "build", "courier-double"))

COURIER_KEY = "ck_test_3f9a1c0e5b7d2a4c6e8f"
APP_SECRET = "app-secret-7c1e9a3b5d2f4e6a8c0b1d3f5a7c9e2b"
START_TIMEOUT = 10.0


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def request(port, method, path, body=None, headers=None, timeout=10.0, ssl_context=None):
    """One HTTP request on a fresh connection; body may be bytes, str or a JSON value
    (HTTPS with ssl_context)."""
    if ssl_context:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ssl_context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


class Process:
    """A child process whose stderr is collected line by line in a thread."""

    def __init__(self, argv, env, stdout_port=False):
        self.lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, pattern, timeout=START_TIMEOUT, start=0):
        """Waits until a line matching pattern appears; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and i >= len(self.lines):
                    raise AssertionError("no line matching %r; got:\n%s" % (pattern, "\n".join(self.lines[-40:])))
                self._cond.wait(min(left, 0.1))

    def text(self):
        with self._cond:
            return "\n".join(self.lines)

    def json_lines(self):
        out = []
        for line in self.text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self._threads:
            t.join(2)
        return self.proc.returncode


class Double:
    """tls=(cert.pem, key.pem, ca.pem): the double's HTTPS mode (its control API too)."""

    def __init__(self, keys=(COURIER_KEY,), tls=None):
        env = dict(os.environ, COURIER_DOUBLE_KEYS=",".join(keys))
        argv = [DOUBLE_BIN, "--port", "0"]
        self.ctx = None
        if tls:
            import ssl
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
            self.ctx = ssl.create_default_context(cafile=str(tls[2]))
        self.p = Process(argv, env)
        self.port = int(self.p.wait_for(r"^PORT (\d+)$").group(1))
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)

    def _request(self, method, path, body=None):
        return request(self.port, method, path, body, ssl_context=self.ctx)

    def configure(self, **kw):
        r = self._request("POST", "/_double/config", kw)
        assert r.status == 200, r.body

    def reset(self):
        assert self._request("POST", "/_double/reset", b"").status == 200

    def last(self):
        return self._request("GET", "/_double/last").json()

    def stats(self):
        return self._request("GET", "/_double/stats").json()

    def served(self):
        return self.stats()["served"]

    def wait_served(self, n, timeout=3.0):
        """Waits (at most timeout seconds) until the double has received n
        calls; returns how many it has."""
        deadline = time.monotonic() + timeout
        while self.served() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.served()

    def stop(self):
        return self.p.stop()


def lua_str(s):
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal for our inputs


ALLOW_POLICY = """
return function(req)
  return { allow = true, tier = "inbox", expires_in = "1h", reason = "test" }
end
"""


class Broker:
    """The real broker, started from a config written into a temporary folder."""

    def __init__(self, tmp_path, double, tenants=None, extra="", env=None, policies=None, courier_timeout_ms=2000,
                 args=()):
        self.dir = tmp_path
        self.double = double
        policies = dict(policies or {"default": ALLOW_POLICY})
        os.makedirs(tmp_path / "policies", exist_ok=True)
        for name, text in policies.items():
            (tmp_path / "policies" / ("%s.lua" % name)).write_text(text)
        if tenants is None:
            tenants = {name: {} for name in policies}
        parts = []
        for name, opts in tenants.items():
            auth = opts.get("auth", 'auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },')
            parts.append("""  [%s] = {
    api_key = %s,
    policy = %s,
    %s
    %s
  },""" % (lua_str(name), opts.get("api_key", '{ env = "COURIER_API_KEY" }'),
             lua_str("policies/%s.lua" % opts.get("policy", name)), auth, opts.get("extra", "")))
        self.config_text = """listen = "127.0.0.1:0"
courier = { base_url = %s, timeout_ms = %d, connect_timeout_ms = 1000 }
%s
tenants = {
%s
}
""" % (lua_str(double.url if double else "http://127.0.0.1:9"), courier_timeout_ms, extra, "\n".join(parts))
        self.config = tmp_path / "broker.conf.lua"
        self.config.write_text(self.config_text)
        e = dict(os.environ)
        e.pop("COURIER_BASE_URL", None)
        e.update({"COURIER_API_KEY": COURIER_KEY, "APP_JWT_SECRET": APP_SECRET})
        e.update(env or {})
        self.env = e
        self.p = Process([BROKER_BIN, "serve", "-c", str(self.config)] + list(args), e)
        self.port = int(self.p.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        self.url = "http://127.0.0.1:%d" % self.port

    def post(self, path="/v1/token", body=None, token=None, headers=None, **kw):
        h = {"Content-Type": "application/json"}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        return request(self.port, "POST", path, body, h, **kw)

    def get(self, path):
        return request(self.port, "GET", path)

    def sighup(self):
        self.p.proc.send_signal(signal.SIGHUP)

    def stop(self, sig=signal.SIGTERM):
        return self.p.stop(sig)


def policy(body):
    """A policy file whose decide(req) is body."""
    return "return function(req)\n%s\nend\n" % body


def mint(sub="alice", secret=APP_SECRET, alg="HS256", ttl=300, **claims):
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + ttl}
    payload.update(claims)
    return pyjwt.encode(payload, secret, algorithm=alg)


@pytest.fixture
def double():
    d = Double()
    yield d
    d.stop()


@pytest.fixture
def broker_factory(tmp_path, double):
    started = []

    def make(**kw):
        sub = tmp_path / ("b%d" % len(started))
        sub.mkdir()
        b = Broker(sub, kw.pop("double", double), **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


@pytest.fixture
def brokers(tmp_path):
    """Starts brokers in named folders prepared beforehand (key files); stops them all."""
    started = []

    def make(name, double, prepare=None, **kw):
        d = tmp_path / name
        d.mkdir()
        if prepare:
            prepare(d)
        b = Broker(d, double, **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


# ------------------------------------------------ reloads, metrics, log lines

RELOAD_WAIT = 5.0
NEW_KEY = "ck_test_rotated_8e7d6c5b4a39281706f5"

DENY_POLICY = """
return function(req)
  return { allow = false, reason = "switched off" }
end
"""


def metrics(b):
    r = b.get("/metrics")
    assert r.status == 200, r.body
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\S+)\s+(\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def generation(b):
    return metrics(b)["broker_generation"]


def reloads(b, result):
    return metrics(b)['broker_reloads_total{result="%s"}' % result]


def wait_metric(b, name, pred, timeout=RELOAD_WAIT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = metrics(b).get(name)
        if last is not None and pred(last):
            return last
        time.sleep(0.02)
    raise AssertionError("%s never satisfied the condition (last %r); log:\n%s" % (name, last, b.p.text()[-3000:]))


def reload_ok(b, timeout=5.0):
    """SIGHUP and wait until the generation increased; returns the new one."""
    g0, ok0, f0 = generation(b), reloads(b, "ok"), reloads(b, "failed")
    b.sighup()
    # The counter moves after the new generation is installed: wait for both.
    wait_metric(b, 'broker_reloads_total{result="ok"}', lambda v: v > ok0, timeout=timeout)
    g = wait_metric(b, "broker_generation", lambda v: v > g0, timeout=timeout)
    m = metrics(b)
    assert m['broker_reloads_total{result="ok"}'] == ok0 + 1, m
    assert m['broker_reloads_total{result="failed"}'] == f0, m
    assert m["broker_last_reload_success"] == 1
    return g


def reload_failed(b):
    """SIGHUP and wait until the failed-reload counter increased; the generation stays."""
    g0, f0, ok0 = generation(b), reloads(b, "failed"), reloads(b, "ok")
    b.sighup()
    wait_metric(b, 'broker_reloads_total{result="failed"}', lambda v: v > f0)
    m = metrics(b)
    assert m["broker_generation"] == g0, m
    assert m['broker_reloads_total{result="ok"}'] == ok0
    assert m["broker_last_reload_success"] == 0
    assert b.get("/readyz").status == 200


def post(b, user="alice", **kw):
    return b.post(body={"user_id": user}, token=mint(user), **kw)


def key_file_prep(d):
    k = d / "courier.key"
    k.write_text(COURIER_KEY + "\n")
    os.chmod(k, 0o600)


FILE_KEY = {"default": {"api_key": '{ file = "courier.key" }'}}


def connect_refused(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # Caught in the backlog of a socket being closed: not served, but not
        # yet the refusal we wait for either.
        return False
    finally:
        s.close()
    return False


def token_lines(b, tenant=None):
    """The broker's token_request log lines, of one tenant if given."""
    return [l for l in b.p.json_lines()
            if l.get("event") == "token_request" and (tenant is None or l.get("tenant") == tenant)]


def wait_token_lines(b, n, tenant=None, timeout=5.0):
    """Waits until at least n token_request lines (of tenant, if given) are logged; returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = token_lines(b, tenant)
        if len(lines) >= n:
            return lines
        time.sleep(0.02)
    raise AssertionError("expected %d token_request lines%s, got:\n%s"
                         % (n, "" if tenant is None else " of tenant %r" % tenant, b.p.text()))


# ------------------------------------------------ a JWKS URL that never answers

# An Ed25519 public key (RFC 8037, appendix A): a JWKS the broker accepts.
ED25519_JWKS = json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "slow",
                                     "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})


class SilentServer:
    """Accepts connections on 127.0.0.1 and answers nothing until answer()
    (then every held and later request gets `body` as a JWKS) or close()."""

    def __init__(self, lifetime=120.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d/jwks.json" % self.port
        self.accepted = threading.Event()
        self._held = []
        self._body = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _reply(self, conn):
        body = self._body.encode()
        try:
            # Read the request first: closing on unread bytes would reset the answer.
            conn.settimeout(2)
            got = b""
            while b"\r\n\r\n" not in got and len(got) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        conn.close()

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted.set()
            with self._lock:
                if self._body is None:
                    self._held.append(conn)
                    continue
            self._reply(conn)

    def answer(self, body=ED25519_JWKS):
        with self._lock:
            self._body = body
            held, self._held = self._held, []
        for conn in held:
            self._reply(conn)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self.sock.close()


def slow_jwks_tenant(url, name="slow"):
    """Config text (appended to a broker's config) adding a tenant whose JWKS
    is fetched from url, waiting up to 60 s for it."""
    return """
tenants[%s] = {
  api_key = { env = "COURIER_API_KEY" },
  policy = "policies/default.lua",
  auth = { jwt = { algorithms = { "EdDSA" }, jwks = { url = %s, timeout_ms = 60000 } } },
}
""" % (lua_str(name), lua_str(url))


@pytest.fixture
def silent_server():
    s = SilentServer()
    yield s
    s.close()
