"""Secrets stay secret: keys, app secrets, session JWTs and issued tokens never
reach the log, the metrics, error answers or `check`'s output.

One scenario runs every kind of outcome (200s for two tenants with different
keys, 401s, 403, 500, 502 from a Courier 401, a SIGHUP), stops the broker and
then reads everything it wrote. The log must still let an operator correlate
a token: each issued token's short hash (token_sha256) is there.
"""
import hashlib
import json
import os
import re
import subprocess
import time

import pytest

from conftest import APP_SECRET, BROKER_BIN, COURIER_KEY, Broker, Double, mint

OTHER_KEY = "ck_other_91b2c3d4e5f60718293a4b5c"
OTHER_APP_SECRET = "other-app-secret-0f1e2d3c4b5a69788796a5b4"
WRONG_SECRET = "wrong-secret-5a4b3c2d1e0f9a8b7c6d5e4f3a2b"
COOKIE_SECRET = "cookie-sess-77aa88bb99cc00dd11ee22ff"
OPAQUE_BEARER = "opaque-bearer-6b5c4d3e2f1a0b9c8d7e"

ALLOW = """
return function(req)
  return { allow = true, tier = "inbox", expires_in = "1h", reason = "test" }
end
"""
DENY = """
return function(req)
  return { allow = false, reason = "no tokens here" }
end
"""
BOOM = """
return function(req)
  error("policy exploded")
end
"""
# Denies with every header it can see as the reason (which is shown to the
# requester): Authorization and Cookie must not be among them.
ECHO_HEADERS = """
return function(req)
  local parts = {}
  for k, v in pairs(req.headers) do parts[#parts + 1] = k .. "=" .. tostring(v) end
  table.sort(parts)
  return { allow = false, reason = table.concat(parts, ";") }
end
"""

JWT_AUTH = 'auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },'
OTHER_AUTH = 'auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "OTHER_APP_JWT_SECRET" } } },'


def metrics_value(b, name):
    for line in b.get("/metrics").body.decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    return None


def sig(jwt):
    return jwt.rsplit(".", 1)[1]


def fragments(secret, window=16):
    """The secret itself and every window-long piece of it (a partial leak counts)."""
    if len(secret) <= window:
        return [secret]
    return [secret[i:i + window] for i in range(len(secret) - window + 1)]


def assert_absent(secret, text, where, whole=False):
    for piece in [secret] if whole else fragments(secret):
        for spelling in (piece, piece.replace("/", "\\/")):
            assert spelling not in text, "%s contains (part of) a secret: %s..." % (where, secret[:12])


def short_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@pytest.fixture
def double2():
    d = Double(keys=(COURIER_KEY, OTHER_KEY))
    yield d
    d.stop()


@pytest.fixture
def secret_broker(tmp_path, double2):
    d = tmp_path / "b"
    d.mkdir()
    key = d / "other.key"
    key.write_text(OTHER_KEY + "\n")
    os.chmod(key, 0o600)
    b = Broker(d, double2,
               policies={"default": ALLOW, "other": ALLOW, "deny": DENY, "boom": BOOM, "echo": ECHO_HEADERS},
               tenants={"default": {"auth": JWT_AUTH},
                        "other": {"api_key": '{ file = "other.key" }', "auth": OTHER_AUTH},
                        "deny": {"auth": JWT_AUTH},
                        "boom": {"auth": JWT_AUTH},
                        "echo": {"auth": JWT_AUTH}},
               env={"OTHER_APP_JWT_SECRET": OTHER_APP_SECRET})
    yield b
    b.stop()


def test_no_secret_anywhere(secret_broker, double2):
    b = secret_broker
    sessions = []   # every requester credential sent
    tokens = []     # every Courier token issued
    answers = []    # (status, body text) of every answer

    def ask(path, user, session, expect, headers=None):
        if session is not None:
            sessions.append(session)
        r = b.post(path, body={"user_id": user}, token=session, headers=headers)
        answers.append((r.status, r.body.decode("utf-8", "replace")))
        assert r.status == expect, (path, r.status, r.body)
        if r.status == 200:
            tokens.append(r.json()["token"])
        else:
            assert "token" not in r.json()
        return r

    cookie = {"Cookie": "session=" + COOKIE_SECRET}
    # Successes, two tenants with two different keys.
    for user in ("alice", "bob", "carol"):
        ask("/v1/token", user, mint(user), 200, headers=cookie)
    assert double2.last()["authorization"] == "Bearer " + COURIER_KEY
    ask("/v1/tenants/other/token", "dave", mint("dave", secret=OTHER_APP_SECRET), 200)
    assert double2.last()["authorization"] == "Bearer " + OTHER_KEY

    # 401s: a JWT signed with the wrong secret, an expired one, an opaque bearer,
    # the other tenant's JWT on this one.
    ask("/v1/token", "alice", mint("alice", secret=WRONG_SECRET), 401)
    ask("/v1/token", "alice", mint("alice", ttl=-3600), 401)
    ask("/v1/token", "alice", OPAQUE_BEARER, 401)
    ask("/v1/token", "alice", mint("alice", secret=OTHER_APP_SECRET), 401)
    # 403, 500, and a 403 whose reason echoes every header the policy sees.
    ask("/v1/tenants/deny/token", "alice", mint("alice"), 403)
    ask("/v1/tenants/boom/token", "alice", mint("alice"), 500)
    r = ask("/v1/tenants/echo/token", "alice", mint("alice"), 403, headers=cookie)
    seen = r.json()["message"]
    assert "authorization" not in seen.lower() and "cookie" not in seen.lower(), seen
    assert "content-type=application/json" in seen, seen  # the other headers do reach it

    # 502: Courier refuses the key, then answers garbage.
    served = double2.served()
    double2.configure(status=401)
    ask("/v1/token", "alice", mint("alice"), 502)
    double2.configure(status=0, mode="garbage")
    ask("/v1/token", "alice", mint("alice"), 502)
    double2.reset()
    assert double2.served() == 0 and served > 0

    # A reload, and tokens from the new generation.
    g0 = metrics_value(b, "broker_generation")
    b.sighup()
    deadline = time.monotonic() + 5
    while metrics_value(b, "broker_generation") == g0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metrics_value(b, "broker_generation") > g0
    ask("/v1/token", "erin", mint("erin"), 200)
    ask("/v1/tenants/other/token", "frank", mint("frank", secret=OTHER_APP_SECRET), 200)

    metrics_text = b.get("/metrics").body.decode()
    health = b.get("/healthz").body.decode() + b.get("/readyz").body.decode()

    # The process keeps its keys out of core dumps.
    with open("/proc/%d/limits" % b.p.proc.pid) as f:
        limits = f.read()
    m = re.search(r"^Max core file size\s+(\S+)\s+(\S+)", limits, re.M)
    assert m and m.group(1) == "0" and m.group(2) == "0", limits

    # `check` on the same configuration.
    chk = subprocess.run([BROKER_BIN, "check", "-c", str(b.config)], env=b.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=15)
    assert chk.returncode == 0, chk.stderr
    check_text = (chk.stdout + chk.stderr).decode("utf-8", "replace")

    assert b.stop() == 0
    log = b.p.text()
    assert len(tokens) == 6 and len(set(tokens)) == 6

    keys = [COURIER_KEY, OTHER_KEY, APP_SECRET, OTHER_APP_SECRET, WRONG_SECRET, COOKIE_SECRET, OPAQUE_BEARER]
    # Keys and signatures: not even a 16-character piece. Whole JWTs: not at all
    # (their header segment is the same in every HS256 JWT, hence not a secret).
    pieces = keys + [sig(s) for s in sessions if s.count(".") == 2] + [sig(t) for t in tokens]
    for s, whole in [(x, False) for x in pieces] + [(x, True) for x in sessions + tokens]:
        assert_absent(s, log, "the log", whole)
        assert_absent(s, metrics_text, "/metrics", whole)
        assert_absent(s, health, "/healthz or /readyz", whole)
        assert_absent(s, check_text, "check's output", whole)

    # Answers: never a key or a credential; a token only in its own 200.
    for status, body in answers:
        for s in keys + sessions:
            assert s not in body, (status, body)
        if status != 200:
            for t in tokens:
                assert t not in body and sig(t) not in body, (status, body)

    # Every issued token can be correlated through its short hash.
    hashes = set()
    for line in log.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("token_sha256"):
            hashes.add(doc["token_sha256"])
            assert doc.get("status") == 200, doc
    for t in tokens:
        assert short_hash(t) in hashes, (short_hash(t), hashes)
    # Key fingerprints, if logged, are hashes, not the keys; the failures were logged.
    assert re.search(r'"status":\s*502', log) and re.search(r'"status":\s*401', log)


def test_check_errors_never_echo_secrets(tmp_path):
    """`check` refusing a config says why without printing any secret it read."""
    d = tmp_path
    (d / "policies").mkdir()
    (d / "policies" / "default.lua").write_text(ALLOW)
    key = d / "k.key"
    key.write_text(OTHER_KEY)
    os.chmod(key, 0o644)
    cfg = d / "broker.conf.lua"
    cfg.write_text("""listen = "127.0.0.1:0"
tenants = {
  default = {
    api_key = { file = "k.key" },
    policy = "policies/default.lua",
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
    max_expires_in = "forever",
  },
}
""")
    env = dict(os.environ, APP_JWT_SECRET=APP_SECRET, COURIER_API_KEY=COURIER_KEY)
    outs = []
    for mode in (0o644, 0o600):
        os.chmod(key, mode)
        p = subprocess.run([BROKER_BIN, "check", "-c", str(cfg)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=15)
        assert p.returncode == 1
        outs.append((p.stdout + p.stderr).decode("utf-8", "replace"))
    for out in outs:
        for s in (OTHER_KEY, APP_SECRET, COURIER_KEY):
            assert s not in out, out


def test_keys_not_in_environment_of_the_log_on_start_failure(tmp_path):
    """A broker that cannot start (policy error) says why without secrets."""
    d = tmp_path
    (d / "policies").mkdir()
    (d / "policies" / "default.lua").write_text("return function(req\n")
    cfg = d / "broker.conf.lua"
    cfg.write_text("""listen = "127.0.0.1:0"
tenants = {
  default = {
    api_key = { env = "COURIER_API_KEY" },
    policy = "policies/default.lua",
    auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } } },
  },
}
""")
    env = dict(os.environ, APP_JWT_SECRET=APP_SECRET, COURIER_API_KEY=COURIER_KEY)
    p = subprocess.run([BROKER_BIN, "serve", "-c", str(cfg)], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=15)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode != 0
    assert "default.lua" in out.replace("\\/", "/")
    for s in (APP_SECRET, COURIER_KEY):
        assert s not in out


# ------------------------------------------------ secrets as platforms mount them

def _k8s_mount(d, files, stamp):
    """A Kubernetes secret volume: KEY -> ..data/KEY, ..data -> ..STAMP/ (re-pointed on update)."""
    d.mkdir(exist_ok=True)
    ts = d / stamp
    ts.mkdir()
    for name, value in files.items():
        (ts / name).write_text(value + "\n")
        os.chmod(ts / name, 0o400)
        if not (d / name).is_symlink():
            os.symlink("..data/" + name, d / name)
    tmp = d / "..data_tmp"
    os.symlink(stamp, tmp)
    os.replace(tmp, d / "..data")


def test_kubernetes_symlinked_secret_files(tmp_path, double):
    from conftest import generation, wait_metric
    (tmp_path / "b").mkdir()
    mount = tmp_path / "b" / "secrets"
    _k8s_mount(mount, {"courier-api-key": COURIER_KEY, "app-jwt-secret": APP_SECRET}, "..2026_12_05_10_00_00.1")
    b = Broker(tmp_path / "b", double, tenants={"default": {
        "api_key": '{ file = "secrets/courier-api-key" }',
        "auth": 'auth = { jwt = { algorithms = { "HS256" }, hmac_secret = { file = "secrets/app-jwt-secret" } } },'}},
        env={"COURIER_API_KEY": "", "APP_JWT_SECRET": ""})
    try:
        r = b.post(body={"user_id": "alice"}, token=mint("alice"))
        assert r.status == 200, r.body
        # The platform rotates the app secret by re-pointing ..data; a reload takes it.
        _k8s_mount(mount, {"courier-api-key": COURIER_KEY, "app-jwt-secret": "rotated-" + APP_SECRET},
                   "..2026_12_05_11_00_00.2")
        g0 = generation(b)
        b.sighup()
        wait_metric(b, "broker_generation", lambda v: v > g0)
        assert b.post(body={"user_id": "alice"}, token=mint("alice")).status == 401
        assert b.post(body={"user_id": "alice"}, token=mint("alice", secret="rotated-" + APP_SECRET)).status == 200
    finally:
        b.stop()


def test_symlinked_secret_with_an_open_mode_is_refused_naming_the_final_file(tmp_path):
    d = tmp_path / "c"
    (d / "policies").mkdir(parents=True)
    (d / "policies" / "p.lua").write_text(ALLOW)
    _k8s_mount(d / "secrets", {"k": COURIER_KEY}, "..2026_12_05")
    os.chmod(d / "secrets" / "..2026_12_05" / "k", 0o644)
    (d / "c.lua").write_text('tenants = { default = { api_key = { file = "secrets/k" }, policy = "policies/p.lua", '
                             'auth = { none = true } } }\n')
    p = subprocess.run([BROKER_BIN, "check", "-c", str(d / "c.lua")], capture_output=True, timeout=15)
    err = p.stderr.decode().replace("\\/", "/")
    assert p.returncode == 1, err
    assert "..2026_12_05/k" in err and "group or others" in err, err
    assert COURIER_KEY not in err


def test_systemd_credentials(tmp_path):
    d = tmp_path / "s"
    cred = tmp_path / "credentials"
    (d / "policies").mkdir(parents=True)
    cred.mkdir()
    (d / "policies" / "p.lua").write_text(ALLOW)
    (cred / "courier-api-key").write_text(COURIER_KEY)
    os.chmod(cred / "courier-api-key", 0o400)
    (d / "c.lua").write_text('tenants = { default = { api_key = { credential = "courier-api-key" }, '
                             'policy = "policies/p.lua", auth = { none = true } } }\n')
    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(cred))
    p = subprocess.run([BROKER_BIN, "check", "-c", str(d / "c.lua")], capture_output=True, timeout=15, env=env)
    assert p.returncode == 0, p.stderr.decode()
    env.pop("CREDENTIALS_DIRECTORY")
    p = subprocess.run([BROKER_BIN, "check", "-c", str(d / "c.lua")], capture_output=True, timeout=15, env=env)
    assert p.returncode == 1 and b"CREDENTIALS_DIRECTORY" in p.stderr, p.stderr
    (d / "c.lua").write_text((d / "c.lua").read_text().replace('"courier-api-key"', '"../courier-api-key"'))
    env["CREDENTIALS_DIRECTORY"] = str(cred)
    p = subprocess.run([BROKER_BIN, "check", "-c", str(d / "c.lua")], capture_output=True, timeout=15, env=env)
    assert p.returncode == 1 and b"not a credential name" in p.stderr, p.stderr
