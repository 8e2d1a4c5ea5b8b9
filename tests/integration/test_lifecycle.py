"""Signals to `serve`: SIGHUP reloads, SIGTERM/SIGINT drain and exit 0
(whatever a reload is doing); a forced exit returns 70.

Every wait is bounded: reloads are observed through /metrics
(broker_generation, broker_reloads_total) within RELOAD_WAIT seconds (conftest).
"""
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import (ALLOW_POLICY, COURIER_KEY, DENY_POLICY, FILE_KEY, NEW_KEY, Double, connect_refused, generation,
                      key_file_prep, metrics, mint, post, reload_failed, reload_ok, reloads, slow_jwks_tenant,
                      wait_token_lines)

EX_SOFTWARE = 70


def wait_exit(b, timeout):
    """The broker's exit status, or a failure naming what it logged if it is
    still running after timeout seconds."""
    try:
        return b.p.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("still running %.1f s after the signal; log:\n%s" % (timeout, b.p.text()[-3000:]))


@pytest.fixture
def double2():
    d = Double(keys=(COURIER_KEY, NEW_KEY))
    yield d
    d.stop()


# ------------------------------------------------------------------ SIGHUP

def test_sighup_switches_policy(broker):
    r = post(broker)
    assert r.status == 200, r.body
    rev0 = r.header("X-Policy-Revision")
    assert re.fullmatch(r"[0-9a-f]{16}", rev0 or ""), r.headers
    (broker.dir / "policies" / "default.lua").write_text(DENY_POLICY)
    # Nothing changes before the signal.
    r = post(broker)
    assert r.status == 200 and r.header("X-Policy-Revision") == rev0, (r.status, r.headers)
    reload_ok(broker)
    r = post(broker)
    assert r.status == 403, r.body
    assert r.json()["error"] == "forbidden"
    # The 403 was decided by the new policy: its log line names the new revision.
    last = wait_token_lines(broker, 3)[-1]
    assert last["status"] == 403, last
    rev1 = last["policy_revision"]
    assert re.fullmatch(r"[0-9a-f]{16}", rev1) and rev1 != rev0, (rev0, rev1)
    broker.p.wait_for(r"reload", timeout=1)
    # And back, to an allow policy of new content: a 200 names a third revision.
    (broker.dir / "policies" / "default.lua").write_text(ALLOW_POLICY + "-- v2\n")
    reload_ok(broker)
    r = post(broker)
    assert r.status == 200, r.body
    rev2 = r.header("X-Policy-Revision")
    assert re.fullmatch(r"[0-9a-f]{16}", rev2 or "") and rev2 not in (rev0, rev1), (rev0, rev1, rev2)


def test_sighup_while_a_request_waits_on_courier(broker, double):
    """The request keeps the generation it started with; the next one sees the new one."""
    double.configure(latency_ms=800)
    out = {}

    def one():
        try:
            r = post(broker)
            out["r"] = (r.status, r.json())
        except Exception as e:  # noqa: BLE001
            out["r"] = repr(e)

    t = threading.Thread(target=one)
    t.start()
    double.wait_served(1, 2)
    assert double.served() == 1
    (broker.dir / "policies" / "default.lua").write_text(DENY_POLICY)
    reload_ok(broker)
    assert post(broker).status == 403
    t.join(10)
    assert isinstance(out.get("r"), tuple) and out["r"][0] == 200, out
    assert out["r"][1]["token"]
    assert broker.get("/readyz").status == 200


def test_failed_reload_policy_syntax_error(broker):
    mark = len(broker.p.lines)
    (broker.dir / "policies" / "default.lua").write_text("return function(req)\n  return {\nend\n")
    reload_failed(broker)
    assert post(broker).status == 200
    # The log says why, naming the policy file.
    broker.p.wait_for(r"default\.lua:\d+", timeout=2, start=mark)
    # Fixed: the next reload succeeds.
    (broker.dir / "policies" / "default.lua").write_text(DENY_POLICY)
    reload_ok(broker)
    assert post(broker).status == 403


def test_failed_reload_missing_key_file(brokers, double):
    b = brokers("b", double, prepare=key_file_prep, tenants=FILE_KEY)
    assert post(b).status == 200
    mark = len(b.p.lines)
    os.unlink(b.dir / "courier.key")
    (b.dir / "policies" / "default.lua").write_text(DENY_POLICY)  # must not take effect either
    reload_failed(b)
    r = post(b)
    assert r.status == 200, r.body
    assert double.last()["authorization"] == "Bearer " + COURIER_KEY
    b.p.wait_for(r"courier\.key", timeout=2, start=mark)


def test_failed_reload_key_file_too_open(brokers, double):
    b = brokers("b", double, prepare=key_file_prep, tenants=FILE_KEY)
    os.chmod(b.dir / "courier.key", 0o644)
    reload_failed(b)
    assert post(b).status == 200


def test_failed_reload_invalid_config(broker):
    text = broker.config.read_text()
    broker.config.write_text(text + '\nlissten = "127.0.0.1:1"\n')
    (broker.dir / "policies" / "default.lua").write_text(DENY_POLICY)  # must not take effect
    mark = len(broker.p.lines)
    reload_failed(broker)
    assert post(broker).status == 200
    broker.p.wait_for(r"lissten", timeout=2, start=mark)
    # Twice in a row: still the old generation.
    reload_failed(broker)
    assert post(broker).status == 200
    m = metrics(broker)
    assert m['broker_reloads_total{result="failed"}'] == 2
    broker.config.write_text(text)
    reload_ok(broker)
    assert post(broker).status == 403
    assert metrics(broker)["broker_policy_stale_seconds"] == 0


def test_reload_rotates_key_file(brokers, double2):
    b = brokers("b", double2, prepare=key_file_prep, tenants=FILE_KEY)
    assert post(b).status == 200
    assert double2.last()["authorization"] == "Bearer " + COURIER_KEY
    k = b.dir / "courier.key"
    k.write_text(NEW_KEY + "\n")
    assert (os.stat(k).st_mode & 0o777) == 0o600
    # Not before the signal.
    assert post(b).status == 200
    assert double2.last()["authorization"] == "Bearer " + COURIER_KEY
    reload_ok(b)
    assert post(b).status == 200
    assert double2.last()["authorization"] == "Bearer " + NEW_KEY


def test_many_sighups_under_load(broker):
    results = []
    stop = threading.Event()
    token = mint("alice", ttl=600)

    def hammer():
        deadline = time.monotonic() + 8
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                r = broker.post(body={"user_id": "alice"}, token=token, timeout=5)
                results.append(r.status)
            except OSError as e:
                results.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        g0 = generation(broker)
        t0 = time.monotonic()
        for i in range(10):
            reload_ok(broker)
            time.sleep(0.05)
        assert generation(broker) == g0 + 10
        # Keep the load on for about 3 s in all.
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert results, "no request was sent"
    bad = [x for x in results if x != 200]
    assert not bad, "%d of %d requests failed: %r" % (len(bad), len(results), bad[:10])
    assert len(results) >= 20
    assert reloads(broker, "failed") == 0


# ------------------------------------------------------------ SIGTERM/INT

@pytest.mark.parametrize("pool", ["warm", "cold"])
def test_sigterm_drains_inflight_requests(broker, double, pool):
    # "warm": one call made beforehand, so the Courier connection pool is not
    # empty; "cold": the five are the broker's very first Courier calls.
    if pool == "warm":
        assert post(broker).status == 200
        double.reset()
    double.configure(latency_ms=1500)
    results = [None] * 5

    def one(i):
        # Five users: identical grants would share one Courier call.
        try:
            r = broker.post(body={"user_id": "u%d" % i}, token=mint("u%d" % i), timeout=15)
            results[i] = (r.status, r.json())
        except Exception as e:  # noqa: BLE001 - recorded and asserted below
            results[i] = repr(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    # All five are waiting on Courier at once (not queued behind each other).
    double.wait_served(5, 1.0)
    assert double.served() == 5, "the five Courier calls did not start together"
    t_sig = time.monotonic()
    broker.p.proc.send_signal(signal.SIGTERM)
    # New connections are refused while the five are still held by the double.
    refused = False
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if connect_refused(broker.port):
            refused = True
            break
        time.sleep(0.02)
    assert refused, "the listening socket still accepts connections after SIGTERM"
    assert time.monotonic() - t_sig < 1.4, "too slow to check refusal before the answers"
    for t in threads:
        t.join(15)
    for r in results:
        assert isinstance(r, tuple), results
        assert r[0] == 200, results
        assert r[1].get("token"), results
    rc = broker.p.proc.wait(10)
    assert rc == 0, broker.p.text()[-2000:]
    assert double.served() == 5


def test_fresh_broker_calls_courier_concurrently(broker, double):
    """The very first Courier calls of a broker are not queued behind each other."""
    double.configure(latency_ms=1000)
    results = []

    def one(i):
        t0 = time.monotonic()
        try:
            # Four users: identical grants would share one Courier call.
            r = broker.post(body={"user_id": "u%d" % i}, token=mint("u%d" % i), timeout=10)
            results.append((r.status, time.monotonic() - t0))
        except Exception as e:  # noqa: BLE001
            results.append((repr(e), time.monotonic() - t0))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [s for s, _ in results] == [200] * 4, results
    assert max(d for _, d in results) < 1.8, results


def test_sigterm_idle_exits_zero(broker):
    assert post(broker).status == 200
    t0 = time.monotonic()
    assert broker.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 5
    assert connect_refused(broker.port)


def test_sigint_exits_zero(broker):
    assert post(broker).status == 200
    t0 = time.monotonic()
    assert broker.stop(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 5
    assert connect_refused(broker.port)


def test_sigterm_after_reload_exits_zero(broker):
    reload_ok(broker)
    assert post(broker).status == 200
    assert broker.stop(signal.SIGTERM) == 0


def test_drain_deadline_answers_instead_of_hanging(brokers, double):
    # drain_timeout_ms shorter than Courier's latency: the held request gets an
    # answer (503, not a token and not a dropped connection) and the process exits 0.
    b = brokers("b", double, extra="drain_timeout_ms = 300", courier_timeout_ms=5000)
    double.configure(latency_ms=3000)
    out = {}

    def one():
        try:
            r = b.post(body={"user_id": "alice"}, token=mint("alice"), timeout=10)
            out["r"] = (r.status, r.json())
        except Exception as e:  # noqa: BLE001
            out["r"] = repr(e)

    t = threading.Thread(target=one)
    t.start()
    double.wait_served(1, 5)
    t0 = time.monotonic()
    b.p.proc.send_signal(signal.SIGTERM)
    t.join(10)
    rc = b.p.proc.wait(10)
    assert rc == 0
    assert time.monotonic() - t0 < 2.5, "the drain deadline was not honoured"
    assert isinstance(out.get("r"), tuple), out
    assert out["r"][0] == 503, out
    assert out["r"][1]["error"] == "unavailable"


# ------------------------------------------------ SIGTERM whatever a reload does

def test_sigterm_during_a_hung_reload_exits_within_the_drain_bound(brokers, double, silent_server):
    """A reload that cannot finish (its JWKS URL accepts and never answers,
    with a 60 s fetch timeout) does not hold SIGTERM back: the broker drains
    and exits 0 within drain_timeout_ms + 1 s (plus slack for a busy machine)."""
    b = brokers("b", double, extra="drain_timeout_ms = 1000")
    assert post(b).status == 200
    b.config.write_text(b.config.read_text() + slow_jwks_tenant(silent_server.url))
    b.sighup()
    assert silent_server.accepted.wait(5), "the reload never asked for the JWKS:\n" + b.p.text()[-2000:]
    # The reload is stuck on the JWKS server; the broker still serves meanwhile.
    assert post(b).status == 200
    t0 = time.monotonic()
    b.p.proc.send_signal(signal.SIGTERM)
    rc = wait_exit(b, 1.0 + 1.0 + 3.0)
    elapsed = time.monotonic() - t0
    assert rc == 0, b.p.text()[-2000:]
    print("SIGTERM during a hung reload: exited in %.0f ms" % (elapsed * 1000))
    text = b.p.text()
    assert "the reload under way is abandoned" in text, text[-2000:]
    assert "reload done" not in text


def test_second_signal_during_the_drain_forces_exit_70(brokers, double):
    """SIGTERM drains; a second SIGTERM or SIGINT during the drain exits at
    once, and that forced exit (like the watchdog's) is told apart from a
    clean drain by its status, 70 (EX_SOFTWARE)."""
    b = brokers("b", double, extra="drain_timeout_ms = 20000", courier_timeout_ms=20000)
    double.configure(latency_ms=15000)
    out = {}

    def one():
        try:
            r = b.post(body={"user_id": "alice"}, token=mint("alice"), timeout=30)
            out["r"] = r.status
        except Exception as e:  # noqa: BLE001 - the connection drops at the forced exit
            out["r"] = repr(e)

    t = threading.Thread(target=one)
    t.start()
    assert double.wait_served(1, 5) == 1
    b.p.proc.send_signal(signal.SIGTERM)
    b.p.wait_for(r"draining", timeout=5)
    t0 = time.monotonic()
    b.p.proc.send_signal(signal.SIGINT)
    rc = wait_exit(b, 5.0)
    assert rc == EX_SOFTWARE, b.p.text()[-2000:]
    assert time.monotonic() - t0 < 5.0
    b.p.wait_for(r"SIGINT during the drain: exiting now", timeout=2)
    t.join(20)


def test_probes_close_their_connection_while_draining(broker, double):
    """Probes keep their connection open (issue 10 I2), except once the drain
    began: then every answer closes it."""
    import socket
    double.configure(latency_ms=1500)
    out = {}

    def one():
        try:
            out["r"] = post(broker, timeout=10).status
        except Exception as e:  # noqa: BLE001
            out["r"] = repr(e)

    s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200") and b"Connection: close" not in first, first
        t = threading.Thread(target=one)
        t.start()
        double.wait_served(1, 2)
        broker.p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while not connect_refused(broker.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        second, deadline = b"", time.monotonic() + 3
        while time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            second += chunk
    finally:
        s.close()
    assert second.startswith(b"HTTP/1.1 503"), second
    assert b"Connection: close" in second, second
    t.join(10)
    assert out.get("r") == 200, out
    assert broker.p.proc.wait(10) == 0
