"""Install and package (issue 13): systemd's readiness protocol, `make install`
with DESTDIR, the installed binary, config and policies, the man pages, the
container image.

The notify tests bind an AF_UNIX datagram socket of their own as
NOTIFY_SOCKET, as systemd would, and read what the broker sends there. Every
wait is bounded; servers listen on 127.0.0.1 only.
"""
import os
import re
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


# ------------------------------------------------------------ make install

BROKER_BIN = os.environ.get("BROKER_BIN", os.path.join(ROOT, "build", "courier-broker"))
KEYS = {"COURIER_API_KEY": "ck_test_installed_0123456789", "APP_JWT_SECRET": "app-secret-installed-0123456789abcdef"}


def make_install(dest, *args):
    """`make install DESTDIR=dest` from the build that holds the broker under test."""
    argv = ["make", "-s", "-C", ROOT, "BUILD=" + os.path.dirname(os.path.abspath(BROKER_BIN)),
            "DESTDIR=" + str(dest)] + list(args) + ["install"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def installed_env():
    e = dict(os.environ)
    e.pop("COURIER_BASE_URL", None)
    e.pop("NOTIFY_SOCKET", None)
    e.update(KEYS)
    return e


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    d = tmp_path_factory.mktemp("dest")
    make_install(d)
    return d


def test_install_lays_out_every_file(dest):
    files = {
        "usr/local/bin/courier-broker": 0o755,
        "usr/local/share/man/man8/courier-broker.8": 0o644,
        "usr/local/share/man/man5/courier-broker.conf.5": 0o644,
        "usr/local/lib/systemd/system/courier-broker.service": 0o644,
        "usr/local/share/courier-broker/examples/broker.conf.lua": 0o644,
        "usr/local/share/courier-broker/policies/default.lua": 0o644,
        "usr/local/share/courier-broker/policies/default_test.lua": 0o644,
        "usr/local/share/doc/courier-broker/operations.md": 0o644,
        "etc/courier-broker/broker.conf.lua": 0o644,
        "etc/courier-broker/policies/default.lua": 0o644,
        "etc/courier-broker/policies/default_test.lua": 0o644,
    }
    for rel, mode in files.items():
        p = dest / rel
        assert p.is_file(), rel
        assert os.stat(p).st_mode & 0o7777 == mode, (rel, oct(os.stat(p).st_mode))
    unit = (dest / "usr/local/lib/systemd/system/courier-broker.service").read_text()
    assert "\nType=notify\n" in unit
    assert "ExecStart=/usr/local/bin/courier-broker serve -c /etc/courier-broker/broker.conf.lua" in unit
    # The installed configuration names the installed policies, not ../policies.
    conf = (dest / "etc/courier-broker/broker.conf.lua").read_text()
    assert 'policy = "policies/default.lua"' in conf and "../policies" not in conf


def test_installed_binary_checks_the_installed_configs(dest):
    binary = str(dest / "usr/local/bin/courier-broker")
    r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("courier-broker "), r
    for conf in ("etc/courier-broker/broker.conf.lua", "usr/local/share/courier-broker/examples/broker.conf.lua"):
        r = subprocess.run([binary, "check", "-c", str(dest / conf)], env=installed_env(), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "configuration %s: ok" % (dest / conf) in r.stderr


def test_installed_binary_serves_the_installed_config(dest, tmp_path):
    from conftest import Process, request
    conf = dest / "etc/courier-broker/broker.conf.lua"
    text = conf.read_text()
    assert 'listen = "127.0.0.1:8080"' in text
    # A port of its own: 8080 may be taken on a shared machine.
    served = dest / "etc/courier-broker/served.conf.lua"
    served.write_text(text.replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"'))
    p = Process([str(dest / "usr/local/bin/courier-broker"), "serve", "-c", str(served)], installed_env())
    try:
        port = int(p.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        r = request(port, "GET", "/healthz")
        assert r.status == 200, r.body
    finally:
        rc = p.stop()
    assert rc == 0, p.text()


def test_install_never_overwrites_the_operators_files(tmp_path):
    d = tmp_path / "d"
    make_install(d)
    conf = d / "etc/courier-broker/broker.conf.lua"
    pol = d / "etc/courier-broker/policies/default.lua"
    conf.write_text("-- edited\n")
    pol.write_text("-- edited policy\n")
    r = make_install(d)
    assert conf.read_text() == "-- edited\n" and pol.read_text() == "-- edited policy\n"
    assert "exists: kept" in r.stdout


def test_install_follows_prefix_and_confdir(tmp_path):
    d = tmp_path / "d"
    make_install(d, "PREFIX=/opt/cb", "CONFDIR=/srv/cb")
    assert (d / "opt/cb/bin/courier-broker").is_file()
    assert (d / "opt/cb/share/man/man5/courier-broker.conf.5").is_file()
    assert (d / "srv/cb/broker.conf.lua").is_file() and (d / "srv/cb/policies/default.lua").is_file()
    unit = (d / "opt/cb/lib/systemd/system/courier-broker.service").read_text()
    assert "ExecStart=/opt/cb/bin/courier-broker serve -c /srv/cb/broker.conf.lua" in unit
    assert "/usr/local/bin" not in unit and "/etc/courier-broker" not in unit


def test_installed_unit_verifies(tmp_path):
    """The unit as installed (real paths, no DESTDIR) passes systemd-analyze verify."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the unit is not verified")
    pfx = tmp_path / "pfx"
    make_install("", "PREFIX=%s/usr" % pfx, "CONFDIR=%s/etc/courier-broker" % pfx)
    unit = pfx / "usr/lib/systemd/system/courier-broker.service"
    assert "ExecStart=%s/usr/bin/courier-broker serve" % pfx in unit.read_text()
    # MANPATH: its Documentation=man:courier-broker(8) is the installed page.
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, MANPATH="%s/usr/share/man" % pfx))
    assert r.returncode == 0 and r.stderr == "", r.stderr


# ------------------------------------------------------------ man pages

def option_names():
    po = os.path.join(os.path.dirname(os.path.abspath(BROKER_BIN)), "print-options")
    out = subprocess.run([po], capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split("|")[1].strip().strip("`") for line in out.splitlines()[2:]]


def render(page):
    """The page as a terminal shows it; None when neither man nor groff is here."""
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    if shutil.which("man"):
        r = subprocess.run(["man", "--warnings", "-l", str(page)], env=env, capture_output=True, text=True,
                           timeout=60)
    elif shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", "-rLL=200n", str(page)], env=env,
                           capture_output=True, text=True, timeout=60)
    else:
        return None
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # no roff warnings
    return subprocess.run(["col", "-bx"], input=r.stdout, capture_output=True, text=True).stdout \
        if shutil.which("col") else r.stdout


def test_man_pages_render_and_carry_every_option(dest):
    conf5 = render(dest / "usr/local/share/man/man5/courier-broker.conf.5")
    if conf5 is None:
        pytest.skip("neither man nor groff is installed: cannot render the pages")
    for name in option_names():
        # .TP's tag: on a line of its own, or before the first words when it fits.
        assert re.search(r"^ {7}%s( |$)" % re.escape(name), conf5, re.M), name
    assert "policy_limits.timeout_ms" in conf5 and "1..5000" in conf5
    page8 = render(dest / "usr/local/share/man/man8/courier-broker.8")
    usage = subprocess.run([BROKER_BIN, "--help"], capture_output=True, text=True, timeout=30).stdout
    for line in usage.splitlines():
        assert line.strip() in page8, line
    assert "READY=1" in page8 and "RELOADING=1" in page8


# ------------------------------------------------------------ the container image

def container_engine():
    for engine in ("docker", "podman"):
        if shutil.which(engine) and subprocess.run([engine, "info"], capture_output=True,
                                                    timeout=60).returncode == 0:
            return engine
    return None


def test_container_image_builds_and_serves():
    engine = container_engine()
    if not engine:
        pytest.skip("no working container engine (docker/podman missing or its daemon not running): "
                    "packaging/Dockerfile not built")
    tag = "courier-broker-test:%d" % os.getpid()
    r = subprocess.run([engine, "build", "-q", "-f", os.path.join(ROOT, "packaging", "Dockerfile"), "-t", tag, ROOT],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    name = "courier-broker-test-%d" % os.getpid()
    try:
        env = []
        for k, v in KEYS.items():
            env += ["-e", "%s=%s" % (k, v)]
        r = subprocess.run([engine, "run", "--rm", "--read-only"] + env + [tag, "check", "-c",
                            "/etc/courier-broker/broker.conf.lua"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([engine, "run", "-d", "--name", name, "--read-only", "--network", "none"] + env + [tag],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        user = subprocess.run([engine, "exec", name, "id", "-u"], capture_output=True, text=True, timeout=60)
        assert user.stdout.strip() == "10001", user
        ok = None
        for _ in range(60):  # bounded: up to ~60 s for the HEALTHCHECK's first verdict
            ok = subprocess.run([engine, "exec", name, "curl", "-fsS", "http://127.0.0.1:8080/healthz"],
                                capture_output=True, text=True, timeout=30)
            if ok.returncode == 0:
                break
            time.sleep(1)
        assert ok.returncode == 0, ok.stderr
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, timeout=120)
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, timeout=120)
