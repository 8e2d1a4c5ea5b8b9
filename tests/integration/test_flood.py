"""Floods and slow clients (issue 10, class 6; review finding M1).

A slowloris opens many connections and trickles bytes so that none ever
finishes a request: libmicrohttpd's timeout is an idle one, reset by every
byte, so on the old code such connections held every slot and /healthz stopped
answering. These tests reproduce it on small settings from one address
(127.0.0.1) and probe from another (127.0.0.2: Linux routes all of 127/8 to
loopback), and check the three defences: the per-IP connection cap, the
whole-request deadline and the admin listener, plus the rate limit on the
warning lines each dropped connection used to write.

Every loop is bounded by a count and a time limit; every socket has a timeout.
"""
import re
import socket
import time

SLOW_HEAD = b"POST /v1/token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n"
PROBE = b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n"


def admin_port(b):
    return int(b.p.wait_for(r"admin listener on 127\.0\.0\.1:(\d+)").group(1))


def slow_open(port, n):
    """n connections from 127.0.0.1 that each sent the start of a request."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(SLOW_HEAD)
            socks.append(s)
        except OSError:
            s.close()
    return socks


def trickle(socks):
    """One byte on each connection; returns those the broker has not closed."""
    alive = []
    for s in socks:
        try:
            s.send(b"X")
            alive.append(s)
        except OSError:
            s.close()
    return alive


def closed_by_peer(s, wait=0.05):
    """True when the broker has closed s (EOF or reset) within wait seconds."""
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def probe(port, source="127.0.0.1", path=b"/healthz", timeout=3.0):
    """Status line of one GET on a fresh connection from source, or the error."""
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    except OSError as e:
        return repr(e)
    try:
        c.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: broker\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0].decode("latin-1") or "closed without an answer"
    except OSError as e:
        return repr(e)
    finally:
        c.close()


def metric(port, name, source="127.0.0.2"):
    """A value of /metrics, asked from source (not the flood's address)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=5.0, source_address=(source, 0))
    try:
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        c.close()
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)$", data, re.M)
    assert m, "no %s in /metrics" % name
    return int(m.group(1))


def warn_lines(b):
    return [j for j in b.p.json_lines() if j.get("level") == "warn"]


def close_all(socks):
    for s in socks:
        s.close()


def test_slowloris_from_one_address_does_not_starve_healthz(broker_factory):
    # Only options the old code knows: the defaults do the rest (per-IP cap
    # max_connections / 4 = 16, request deadline 10 s).
    b = broker_factory(extra="threads = 2\nmax_connections = 64")
    socks = slow_open(b.port, 300)
    try:
        answers = []
        t0 = time.monotonic()
        for _ in range(8):  # about 4 s of trickling, a byte every 0.5 s
            socks = trickle(socks)
            answers.append(probe(b.port, source="127.0.0.2"))
            time.sleep(0.5)
        assert time.monotonic() - t0 < 60
        # The probe came from another address: the flood's cap left it room.
        assert all(a.startswith("HTTP/1.1 200") for a in answers), answers
        # One address holds at most its cap; the rest were closed at accept.
        assert len(socks) <= 16, len(socks)
        assert metric(b.port, "broker_connections_refused_total") >= 300 - 16
    finally:
        close_all(socks)
    # Hundreds of dropped connections, yet a bounded number of warning lines:
    # at most 5 a second plus one "suppressed" line a second (about 6 s here).
    time.sleep(1.2)
    probe(b.port)  # a turn of the loops, which reports what was suppressed
    lines = warn_lines(b)
    assert len(lines) <= 60, len(lines)
    assert any("similar warnings suppressed" in j["msg"] for j in lines), lines[-5:]
    assert metric(b.port, "broker_log_suppressed_total") > 0


def test_trickled_requests_are_cut_at_the_deadline(broker_factory):
    b = broker_factory(extra="threads = 2\nmax_connections = 64\nmax_connections_per_ip = 0\n"
                             "request_timeout_ms = 1500\nconnection_timeout_s = 60")
    socks = slow_open(b.port, 40)
    assert len(socks) == 40
    try:
        t0 = time.monotonic()
        while socks and time.monotonic() - t0 < 8:  # a byte every 0.25 s, at most 8 s
            socks = trickle(socks)
            time.sleep(0.25)
        # However slowly they trickle, the deadline (not the idle timeout,
        # 60 s here) closed every one of them.
        assert not socks, "%d slow connections still open after %.1f s" % (len(socks), time.monotonic() - t0)
        assert metric(b.port, "broker_request_timeouts_total") >= 40
        assert probe(b.port).startswith("HTTP/1.1 200")
    finally:
        close_all(socks)


def test_a_connection_that_sends_nothing_is_cut_at_the_deadline(broker_factory):
    b = broker_factory(extra="max_connections_per_ip = 0\nrequest_timeout_ms = 1000\nconnection_timeout_s = 60")
    s = socket.create_connection(("127.0.0.1", b.port), timeout=5.0)
    try:
        t0 = time.monotonic()
        assert s.recv(1) == b""  # closed by the broker, within the socket's 5 s
        assert time.monotonic() - t0 < 5
    finally:
        s.close()


def test_a_kept_alive_connection_waits_the_idle_timeout_not_the_deadline(broker_factory):
    b = broker_factory(extra="max_connections_per_ip = 0\nrequest_timeout_ms = 1000\nconnection_timeout_s = 30")
    body = b'{"user_id":"alice"}'
    ask = (b"POST /v1/token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    s = socket.create_connection(("127.0.0.1", b.port), timeout=5.0)
    try:
        for _ in range(2):
            s.sendall(ask)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                assert chunk, "closed before an answer"
                data += chunk
            assert data.startswith(b"HTTP/1.1 401"), data[:40]
            # Idle between requests for longer than the request deadline.
            time.sleep(1.6)
        assert metric(b.port, "broker_request_timeouts_total") == 0
    finally:
        s.close()


def test_a_request_waiting_on_courier_is_not_cut_by_the_deadline(broker_factory, double):
    double.configure(latency_ms=1500)
    b = broker_factory(extra="max_connections_per_ip = 0\nrequest_timeout_ms = 1000",
                       tenants={"default": {"auth": "auth = { none = true },"}}, courier_timeout_ms=5000)
    r = b.post(body={"user_id": "alice"}, timeout=10.0)
    assert r.status == 200, r.body
    assert metric(b.port, "broker_request_timeouts_total") == 0


def test_per_ip_cap_closes_extra_connections_at_once(broker_factory):
    b = broker_factory(extra="max_connections_per_ip = 3")
    held = [socket.create_connection(("127.0.0.1", b.port), timeout=5.0) for _ in range(3)]
    extra = [socket.create_connection(("127.0.0.1", b.port), timeout=5.0) for _ in range(2)]
    try:
        time.sleep(0.3)
        assert not any(closed_by_peer(s) for s in held)
        assert all(closed_by_peer(s, wait=3.0) for s in extra)
        # Another address has its own count.
        assert probe(b.port, source="127.0.0.2").startswith("HTTP/1.1 200")
        assert metric(b.port, "broker_connections_refused_total") == 2
        # A closed connection gives its place back.
        held.pop().close()
        time.sleep(0.3)
        assert probe(b.port).startswith("HTTP/1.1 200")
    finally:
        close_all(held + extra)


def test_admin_listener_answers_when_every_client_slot_is_held(broker_factory):
    b = broker_factory(extra='admin_listen = "127.0.0.1:0"\nthreads = 2\nmax_connections = 8\n'
                             "max_connections_per_ip = 0\nrequest_timeout_ms = 60000")
    admin = admin_port(b)
    socks = slow_open(b.port, 20)  # 8 held by the loops, 12 in the backlog
    try:
        socks = trickle(socks)
        # Every client slot is held: the probe on `listen` waits in the backlog.
        assert not probe(b.port, timeout=1.0).startswith("HTTP/1.1 200")
        for path in (b"/healthz", b"/readyz", b"/metrics"):
            assert probe(admin, path=path).startswith("HTTP/1.1 200"), path
        # Only the probes there: the token routes are not served.
        assert probe(admin, path=b"/v1/token").startswith("HTTP/1.1 404")
        assert metric(admin, "broker_loop_connections{loop=\"0\"}") == 4
    finally:
        close_all(socks)


def test_admin_listen_must_differ_from_listen(tmp_path):
    import subprocess
    from conftest import BROKER_BIN
    (tmp_path / "p.lua").write_text("return function(req) return {allow=false} end\n")
    (tmp_path / "c.lua").write_text('listen = "127.0.0.1:18999"\nadmin_listen = "127.0.0.1:18999"\n'
                                    'tenants = { default = { api_key = { env = "K" }, policy = "p.lua", '
                                    "auth = { none = true } } }\n")
    r = subprocess.run([BROKER_BIN, "check", "-c", str(tmp_path / "c.lua")], env={"K": "x"},
                       capture_output=True, timeout=30)
    assert r.returncode == 1
    assert b"admin_listen" in r.stderr + r.stdout
