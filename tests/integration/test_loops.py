"""Event loops and the acceptor: connections are spread over the loops, and
max_connections makes extra connections wait instead of failing.

Each loop owns its connections for their whole life (keep-alive included), so
the acceptor gives every new one to the loop holding the fewest; the
broker_loop_connections gauge of /metrics shows each loop's share.
"""
import re
import socket
import time

# A token request the broker answers (401, no credential) after reading it
# whole, so the connection stays open (an early answer, as for GET /healthz,
# makes libmicrohttpd close it).
BODY = b'{"user_id":"alice"}'
ASK = (b"POST /v1/token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


def open_conn(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def read_answer(s):
    """Reads one HTTP answer with a Content-Length body; returns its head and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError("connection closed before an answer: %r" % data)
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    want = int(m.group(1)) if m else 0
    while len(body) < want:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return head, body


def ask(s):
    s.sendall(ASK)
    head, _ = read_answer(s)
    assert head.startswith(b"HTTP/1.1 401"), head
    assert b"close" not in head.lower(), head


def loop_gauges(port):
    s = open_conn(port)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: broker\r\n\r\n")
        _, body = read_answer(s)
    finally:
        s.close()
    return {int(m.group(1)): int(m.group(2))
            for m in re.finditer(rb'broker_loop_connections\{loop="(\d+)"\} (\d+)', body)}


def test_connections_are_spread_evenly_over_the_loops(broker_factory):
    b = broker_factory(extra="threads = 3")
    conns = []
    try:
        for _ in range(9):  # one at a time: each is accepted before the next arrives
            s = open_conn(b.port)
            ask(s)
            conns.append(s)
        gauges = loop_gauges(b.port)  # its own connection is the tenth
        assert sorted(gauges) == [0, 1, 2], gauges
        assert sum(gauges.values()) == 10, gauges
        assert max(gauges.values()) - min(gauges.values()) <= 1, gauges
    finally:
        for s in conns:
            s.close()


def test_closed_connections_leave_their_loop(broker_factory):
    b = broker_factory(extra="threads = 2")
    conns = [open_conn(b.port) for _ in range(4)]
    for s in conns:
        ask(s)
    for s in conns:
        s.close()
    deadline = time.monotonic() + 5
    while True:
        gauges = loop_gauges(b.port)
        if sum(gauges.values()) == 1:  # only the /metrics connection itself
            break
        assert time.monotonic() < deadline, gauges
        time.sleep(0.05)


def test_connection_over_max_connections_waits_for_a_free_slot(broker_factory):
    # No per-IP cap: all three connections come from 127.0.0.1.
    b = broker_factory(extra="threads = 2\nmax_connections = 2\nmax_connections_per_ip = 0")
    first, second = open_conn(b.port), open_conn(b.port)
    ask(first)
    ask(second)
    third = open_conn(b.port, timeout=0.5)
    try:
        third.sendall(ASK)
        try:
            data = third.recv(4096)
        except socket.timeout:
            data = None
        # Not answered, and not refused or reset: it waits in the backlog.
        assert data is None, data
        first.close()
        third.settimeout(5.0)
        head, _ = read_answer(third)
        assert head.startswith(b"HTTP/1.1 401"), head
    finally:
        for s in (second, third):
            s.close()
