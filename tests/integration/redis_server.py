"""A real redis-server for the tests, on 127.0.0.1 and a free port, and a
small RESP client to look inside it (the tests need no Python Redis library).

Every wait is bounded. RedisServer.available() says whether Debian's
redis-server is installed (scripts/install-deps.sh installs it).
"""
import os
import shutil
import signal
import socket
import subprocess
import time

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RespError(Exception):
    pass


class Client:
    """One connection; call("SET", "k", "v") returns the decoded reply."""

    def __init__(self, port, password=None, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        if password is not None:
            self.call("AUTH", password)

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RespError("unexpected reply %r" % line)

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def dump_all(self):
        """Every key and everything in its value, as bytes: {key: [bytes...]}."""
        out = {}
        cursor = b"0"
        for _ in range(100000):  # bounded: SCAN ends when the cursor is back at 0
            cursor, keys = self.call("SCAN", cursor, "COUNT", 1000)
            for k in keys:
                t = self.call("TYPE", k)
                if t == "string":
                    vals = [self.call("GET", k)]
                elif t == "set":
                    vals = self.call("SMEMBERS", k)
                elif t == "hash":
                    vals = self.call("HGETALL", k)
                elif t == "list":
                    vals = self.call("LRANGE", k, 0, -1)
                elif t == "zset":
                    vals = self.call("ZRANGE", k, 0, -1, "WITHSCORES")
                else:
                    vals = [self.call("DUMP", k)]
                out[k] = [v for v in vals if v is not None]
            if cursor == b"0":
                return out
        raise AssertionError("SCAN did not end")


class RedisServer:
    """redis-server on 127.0.0.1:port (a free one unless given), with AOF on
    (appendfsync always) so that a SIGKILL loses nothing it acknowledged."""

    def __init__(self, workdir, password=None, port=None):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.password = password
        self.port = port or free_port()
        self.proc = None
        self.log = os.path.join(self.dir, "redis.log")

    @staticmethod
    def available():
        return os.access(REDIS_BIN, os.X_OK)

    def start(self):
        argv = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--logfile", self.log, "--daemonize", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited: %s" % self.log_text()[-2000:])
            try:
                c = self.client()
                c.call("PING")
                c.close()
                return self
            except (OSError, RespError):
                time.sleep(0.05)
        raise AssertionError("redis-server did not answer within %.0f s" % START_TIMEOUT)

    def client(self):
        return Client(self.port, self.password)

    def kill(self):
        """SIGKILL: what a crash looks like to the brokers."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def aof_append(self, *args):
        """Appends a command to the append-only file of a stopped server: it
        holds once the server starts again, though nobody PUBLISHed it."""
        d = os.path.join(self.dir, "appendonlydir")
        incr = sorted(f for f in os.listdir(d) if f.endswith(".incr.aof"))[-1]
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        with open(os.path.join(d, incr), "ab") as f:
            f.write(b"".join(out))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_text(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""
