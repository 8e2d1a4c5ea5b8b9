"""Install and package (issue 13): systemd's readiness protocol, `make install`
with DESTDIR, the installed binary, config and policies, the man pages, the
container image.

The notify tests bind an AF_UNIX datagram socket of their own as
NOTIFY_SOCKET, as systemd would, and read what the broker sends there. Every
wait is bounded; servers listen on 127.0.0.1 only.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, Broker, metrics, policy, reload_failed, reload_ok

WAIT = 10.0


class NotifySocket:
    """What systemd holds for a Type=notify service: a datagram socket."""

    def __init__(self, abstract=False):
        self.dir = tempfile.mkdtemp(prefix="cbn", dir="/tmp")  # sun_path is 108 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "cbn-%d-%s" % (os.getpid(), os.path.basename(self.dir))
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(self.dir, "notify")
            self.sock.bind(self.address)
        self.messages = []

    def next(self, timeout=WAIT):
        """The next datagram, as a dict of its KEY=VALUE lines."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        msg = dict(line.split("=", 1) for line in data.split("\n") if line)
        self.messages.append(msg)
        return msg

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    n = NotifySocket()
    yield n
    n.close()


def test_notify_ready_reloading_stopping(tmp_path, double, notify):
    b = Broker(tmp_path, double, env={"NOTIFY_SOCKET": notify.address})
    try:
        m = notify.next()
        assert m.get("READY") == "1", notify.messages
        assert m.get("STATUS") == "serving generation 1"
        # READY=1 comes once the generation serves: it answers now.
        assert b.get("/readyz").status == 200

        before = time.clock_gettime(time.CLOCK_MONOTONIC)
        reload_ok(b)
        m = notify.next()
        assert m.get("RELOADING") == "1", notify.messages
        usec = int(m["MONOTONIC_USEC"])
        after = time.clock_gettime(time.CLOCK_MONOTONIC)
        assert before * 1e6 - 1e6 <= usec <= after * 1e6 + 1e6, (before, usec, after)
        m = notify.next()
        assert m.get("READY") == "1" and m.get("STATUS") == "serving generation 2", notify.messages

        # A refused reload still ends the RELOADING state: READY=1, same generation.
        (tmp_path / "policies" / "default.lua").write_text(policy("return {"))
        reload_failed(b)
        assert notify.next().get("RELOADING") == "1", notify.messages
        m = notify.next()
        assert m.get("READY") == "1" and m.get("STATUS") == "serving generation 2", notify.messages
    finally:
        rc = b.stop()
    assert rc == 0
    assert notify.next().get("STOPPING") == "1", notify.messages


def test_notify_abstract_socket(tmp_path, double):
    n = NotifySocket(abstract=True)
    try:
        b = Broker(tmp_path, double, env={"NOTIFY_SOCKET": n.address})
        try:
            assert n.next().get("READY") == "1"
        finally:
            b.stop()
        assert n.next().get("STOPPING") == "1"
    finally:
        n.close()


def test_notify_socket_gone_does_not_stop_serving(tmp_path, double):
    """systemd not listening (a stale NOTIFY_SOCKET) is a warning, never a failure."""
    b = Broker(tmp_path, double, env={"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    try:
        assert b.get("/healthz").status == 200
        reload_ok(b)
        assert "cannot notify NOTIFY_SOCKET" in b.p.text()
    finally:
        assert b.stop() == 0
