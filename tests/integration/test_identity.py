"""Requester identity (issue 3): every JWT algorithm, the attack list, client
keys, trusted proxies, the order of modes and JWKS by URL with rotation.

Tokens come from PyJWT and `cryptography` (Debian's python3 packages), never
from code written here, except the attack tokens, which are built by hand so
that each one differs from a good token in exactly one way (and is re-signed
with the right key whenever the signature is not what is being attacked).

Every refusal is a 401 `unauthenticated` with `WWW-Authenticate: Bearer`, and
the Courier test double's served count is unchanged: the tenants under attack
run a policy that allows everything, so a credential wrongly accepted would
show up as a token issued. Every server binds 127.0.0.1; every loop is bounded.
"""
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import subprocess
import threading
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from conftest import APP_SECRET, BROKER_BIN, COURIER_KEY, Broker, Double


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# ------------------------------------------------------------------ keys

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # nobody's key: the attacker's
RSA_C = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # in the JWKS, restricted to RS256
EC256_A = ec.generate_private_key(ec.SECP256R1())
EC256_B = ec.generate_private_key(ec.SECP256R1())
EC384_A = ec.generate_private_key(ec.SECP384R1())
ED_A = ed25519.Ed25519PrivateKey.generate()
ED_B = ed25519.Ed25519PrivateKey.generate()
RSA_1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
OCT_SECRET = b"a-symmetric-key-published-in-the-jwks!!"

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

BILLING_KEY = "bk_live_9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"
OPS_KEY = "ok_live_1a3c5e7f9b2d4f6a8c0e1b3d5f7a9c2e"
OTHER_SECRET = "some-other-secret-of-32-bytes-or-more!"
ISSUER = "https://issuer.example.com/"
AUDIENCE = "courier-broker"

ALL_ASYM = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk(key, kid, alg=None):
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        d = json.loads(RSAAlgorithm.to_jwk(pub))
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        # RFC 7518 §6.2.1.2: x and y are the full coordinate size. PyJWT 2.6's
        # to_jwk drops leading zero bytes (1 key in ~64 on P-256), so pad here.
        d = json.loads(ECAlgorithm.to_jwk(pub))
        size = (pub.curve.key_size + 7) // 8
        nums = pub.public_numbers()
        d["x"] = b64u(nums.x.to_bytes(size, "big"))
        d["y"] = b64u(nums.y.to_bytes(size, "big"))
    else:
        d = json.loads(OKPAlgorithm.to_jwk(pub))
    d["kid"] = kid
    d["use"] = "sig"
    if alg:
        d["alg"] = alg
    return d


# The JWKS of the `jwks` tenants: one key of each type, an RSA key that
# declares its algorithm (RS256 only), and keys the broker must not use: an
# encryption key, a symmetric key, a 1024-bit RSA key, a private key.
_ENC = jwk(RSA_C, "enc-key")
_ENC["use"] = "enc"
JWKS_DOC = {"keys": [jwk(RSA_A, "rsa-a"), jwk(EC256_A, "ec256-a"), jwk(EC384_A, "ec384-a"),
                     jwk(ED_A, "ed-a"), jwk(RSA_C, "rsa-rs256-only", alg="RS256"), _ENC,
                     {"kty": "oct", "kid": "oct", "k": b64u(OCT_SECRET), "alg": "HS256"},
                     jwk(RSA_1024, "rsa-1024"),
                     dict(json.loads(OKPAlgorithm.to_jwk(ED_B)), kid="ed-private")]}
KID_FOR_ALG = {"RS": "rsa-a", "PS": "rsa-a", "ES256": "ec256-a", "ES384": "ec384-a", "EdDSA": "ed-a"}


def key_for(alg):
    if alg.startswith(("RS", "PS")):
        return RSA_A
    return {"ES256": EC256_A, "ES384": EC384_A, "EdDSA": ED_A}[alg]


def kid_for(alg):
    return KID_FOR_ALG.get(alg, KID_FOR_ALG.get(alg[:2]))


# ------------------------------------------------------------------ tokens


def seg(obj):
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def claims(sub="alice", ttl=300, **kw):
    now = int(time.time())
    c = {"sub": sub, "iat": now, "exp": now + ttl}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def sign(alg, key, data):
    """The JWS signature (RFC 7518) of data under alg, computed with `cryptography`."""
    if isinstance(data, str):
        data = data.encode()
    if alg.startswith("HS"):
        secret = key.encode() if isinstance(key, str) else key
        return hmac.new(secret, data, getattr(hashlib, "sha" + alg[2:])).digest()
    if alg.startswith("RS"):
        return key.sign(data, padding.PKCS1v15(), HASH[alg[2:]]())
    if alg.startswith("PS"):
        h = HASH[alg[2:]]
        return key.sign(data, padding.PSS(mgf=padding.MGF1(h()), salt_length=h.digest_size), h())
    if alg.startswith("ES"):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(HASH[alg[2:]]())))
        n = (key.curve.key_size + 7) // 8
        return r.to_bytes(n, "big") + s.to_bytes(n, "big")
    if alg in ("EdDSA", "Ed25519"):
        return key.sign(data)
    raise ValueError(alg)


def forge(header, payload, alg=None, key=None, sig=None):
    """A compact JWS from a header and a payload (dicts, or already-encoded
    segments). Signed with key under alg (default: the header's alg) unless
    sig (bytes, or an encoded str) is given."""
    h = header if isinstance(header, str) else seg(header)
    p = payload if isinstance(payload, str) else seg(payload)
    if sig is None:
        sig = sign(alg or header["alg"], key, "%s.%s" % (h, p))
    return "%s.%s.%s" % (h, p, sig if isinstance(sig, str) else b64u(sig))


def hs(sub="alice", secret=APP_SECRET, alg="HS256", ttl=300, headers=None, **kw):
    return pyjwt.encode(claims(sub, ttl, **kw), secret, algorithm=alg, headers=headers)


def asym(alg, sub="alice", key=None, kid=None, ttl=300, headers=None, **kw):
    hdr = dict(headers or {})
    if kid:
        hdr["kid"] = kid
    return pyjwt.encode(claims(sub, ttl, **kw), key or key_for(alg), algorithm=alg, headers=hdr or None)


def resign_hs(token, secret=APP_SECRET, alg="HS256"):
    h, p, _ = token.split(".")
    return forge(h, p, alg=alg, key=secret)


# ------------------------------------------------------------------ brokers

# Allows everything, even anonymous requesters, so a credential wrongly
# accepted (or a fall-through to `none`) issues a token. With {"echo": true} in
# the body it denies instead, and its reason shows what the broker saw.
ECHO_POLICY = """
return function(req)
  local id = req.identity
  if req.body.echo then
    return { allow = false, reason = "id=" .. tostring(id.method) .. "|" .. tostring(id.subject) .. "|" ..
             tostring(id.authenticated) .. "|" .. tostring(req.client.ip) }
  end
  if req.body.sublen then
    return { allow = false, reason = "sublen=" .. tostring(#(id.subject or "")) .. "|" .. tostring(id.method) }
  end
  if req.body.claim then
    local v = id.claims and id.claims[req.body.claim]
    return { allow = false, reason = "claim=" .. tostring(math.type(v) or type(v)) .. "|" .. tostring(v) }
  end
  return { allow = true, tier = "inbox", expires_in = "1h", reason = "test" }
end
"""


def path(tenant):
    return "/v1/tenants/%s/token" % tenant


def jwt_auth(algs, extra=""):
    return 'auth = { jwt = { algorithms = { %s }, %s } },' % (", ".join(json.dumps(a) for a in algs), extra)


def write_private(p, data):
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.chmod(p, 0o600)
    return str(p)


def write_config(tmp, auth, env=None):
    """A one-tenant configuration for `check`/`serve` runs that are expected to fail."""
    (tmp / "policies").mkdir(exist_ok=True)
    (tmp / "policies" / "default.lua").write_text(ECHO_POLICY)
    cfg = tmp / "broker.conf.lua"
    cfg.write_text("""listen = "127.0.0.1:0"
courier = { base_url = "http://127.0.0.1:9" }
tenants = { default = { api_key = { env = "COURIER_API_KEY" }, policy = "policies/default.lua",
  %s } }
""" % auth)
    e = dict(os.environ, COURIER_API_KEY=COURIER_KEY, APP_JWT_SECRET=APP_SECRET)
    e.pop("COURIER_BASE_URL", None)
    e.update(env or {})
    return str(cfg), e


def expect_401(b, tenant, token=None, headers=None, body=None):
    d = b.double
    before = d.served()
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    r = b.post(path(tenant), body=body or {"user_id": "alice"}, headers=h)
    assert r.status == 401, (r.status, r.body)
    doc = r.json()
    assert doc["error"] == "unauthenticated", doc
    assert "token" not in doc
    assert (r.header("WWW-Authenticate") or "").startswith("Bearer"), r.headers
    assert d.served() == before
    return r


def expect_200(b, tenant, token=None, headers=None):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    r = b.post(path(tenant), body={"user_id": "alice"}, headers=h)
    assert r.status == 200, (r.status, r.body)
    assert r.json()["scope"].startswith("user_id:alice ")
    return r


def echo(b, tenant, token=None, headers=None):
    """What the broker saw: (method, subject, authenticated, client ip)."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    before = b.double.served()
    r = b.post(path(tenant), body={"user_id": "alice", "echo": True}, headers=h)
    assert r.status == 403, (r.status, r.body)
    msg = r.json()["message"]
    assert msg.startswith("id="), msg
    assert b.double.served() == before
    method, subject, authenticated, ip = msg[3:].split("|")
    return method, subject, authenticated, ip


def claim(b, tenant, token, name):
    r = b.post(path(tenant), body={"user_id": "alice", "claim": name}, headers={"Authorization": "Bearer " + token})
    assert r.status == 403, (r.status, r.body)
    return r.json()["message"]


def log_line_for(b, subject, status=200, timeout=5.0):
    """The token_request log line of the request by subject that got status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for l in b.p.json_lines():
            if l.get("event") == "token_request" and l.get("subject") == subject and l.get("status") == status:
                return l
        time.sleep(0.02)
    raise AssertionError("no token_request line with subject %r:\n%s" % (subject, b.p.text()[-3000:]))


class Shared:
    """One double and one broker per module for the read-only cases."""

    def __init__(self, tmp, tenants, env=None):
        self.double = Double()
        try:
            policies = {name: ECHO_POLICY for name in tenants}
            self.broker = Broker(tmp, self.double, tenants=tenants, policies=policies, env=env)
        except BaseException:
            self.double.stop()
            raise
        self.broker.double = self.double

    def stop(self):
        self.broker.stop()
        self.double.stop()


@pytest.fixture(scope="module")
def keydir(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    files = {
        "rsa": write_private(d / "rsa_a.pem", pem(RSA_A)),
        "ec256": write_private(d / "ec256_a.pem", pem(EC256_A)),
        "ec384": write_private(d / "ec384_a.pem", pem(EC384_A)),
        "ed": write_private(d / "ed_a.pem", pem(ED_A)),
        "jwks": write_private(d / "jwks.json", json.dumps(JWKS_DOC)),
    }
    return files


@pytest.fixture(scope="module")
def hs_broker(tmp_path_factory):
    """HMAC tenants and the claim checks."""
    t = {
        "hs": {"auth": jwt_auth(["HS256", "HS384", "HS512"], 'hmac_secret = { env = "APP_JWT_SECRET" },')},
        "hs256": {"auth": jwt_auth(["HS256"], 'hmac_secret = { env = "APP_JWT_SECRET" },')},
        "claims": {"auth": jwt_auth(["HS256"], 'hmac_secret = { env = "APP_JWT_SECRET" }, issuer = %s, '
                                    'audience = %s, leeway_s = 30' % (json.dumps(ISSUER), json.dumps(AUDIENCE)))},
        "small": {"auth": jwt_auth(["HS256"], 'hmac_secret = { env = "APP_JWT_SECRET" }, max_token_bytes = 1024')},
        "subclaim": {"auth": jwt_auth(["HS256"], 'hmac_secret = { env = "APP_JWT_SECRET" }, subject_claim = "email"')},
        "maxage": {"auth": jwt_auth(["HS256"], 'hmac_secret = { env = "APP_JWT_SECRET" }, max_age_s = 600')},
        "typ": {"auth": jwt_auth(["HS256"], 'hmac_secret = { env = "APP_JWT_SECRET" }, typ = "at+jwt"')},
    }
    s = Shared(tmp_path_factory.mktemp("hs"), t)
    yield s.broker
    s.stop()


@pytest.fixture(scope="module")
def pk_broker(tmp_path_factory, keydir):
    """One tenant per public key type, and tenants that allow fewer algorithms."""
    def pk(algs, f):
        return {"auth": jwt_auth(algs, 'public_key = { file = %s },' % json.dumps(f))}
    t = {
        "rsa": pk(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"], keydir["rsa"]),
        "rs256": pk(["RS256"], keydir["rsa"]),
        "es256": pk(["ES256"], keydir["ec256"]),
        "es384": pk(["ES384"], keydir["ec384"]),
        "eddsa": pk(["EdDSA"], keydir["ed"]),
    }
    s = Shared(tmp_path_factory.mktemp("pk"), t)
    yield s.broker
    s.stop()


@pytest.fixture(scope="module")
def jwks_broker(tmp_path_factory, keydir):
    """JWKS from a file: every asymmetric algorithm; and one tenant that also has an HMAC secret."""
    jw = 'jwks = { file = %s },' % json.dumps(keydir["jwks"])
    t = {
        "jwks": {"auth": jwt_auth(ALL_ASYM, jw)},
        "jwks_hs": {"auth": jwt_auth(["HS256", "RS256", "ES256"], jw + ' hmac_secret = { env = "APP_JWT_SECRET" },')},
    }
    s = Shared(tmp_path_factory.mktemp("jwks"), t)
    yield s.broker
    s.stop()


@pytest.fixture(scope="module")
def modes_broker(tmp_path_factory):
    """client_keys, trusted_proxy and combinations of modes."""
    ck = 'client_keys = { { name = "billing-backend", key = { env = "BILLING_KEY" } }, ' \
         '{ name = "ops", key = { env = "OPS_KEY" } } },'
    hsj = 'jwt = { algorithms = { "HS256" }, hmac_secret = { env = "APP_JWT_SECRET" } },'
    t = {
        "ck": {"auth": "auth = { %s }," % ck},
        "proxy_lo": {"auth": 'auth = { trusted_proxy = { header = "X-Forwarded-User", from = { "127.0.0.1/32" } } },'},
        "proxy_net": {"auth": 'auth = { trusted_proxy = { header = "X-Remote-User", from = { "10.0.0.0/8", "127.0.0.0/8" } } },'},
        "proxy_far": {"auth": 'auth = { trusted_proxy = { header = "X-Forwarded-User", from = { "10.0.0.0/8" } } },'},
        "proxy_far_none": {"auth": 'auth = { trusted_proxy = { header = "X-Forwarded-User", from = { "10.0.0.0/8" } }, '
                                   'none = true },'},
        "multi": {"auth": "auth = { %s %s none = true }," % (hsj, ck)},
        "jwt_proxy": {"auth": 'auth = { %s trusted_proxy = { header = "X-Forwarded-User", from = { "127.0.0.1/32" } } },'
                              % hsj},
        "jwt_none": {"auth": "auth = { %s none = true }," % hsj},
    }
    s = Shared(tmp_path_factory.mktemp("modes"), t, env={"BILLING_KEY": BILLING_KEY, "OPS_KEY": OPS_KEY})
    yield s.broker
    s.stop()


# ================================================================== every algorithm, the right key


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms_accepted(hs_broker, alg):
    sub = "hs-" + alg.lower()
    tok = hs(sub=sub, alg=alg)
    assert echo(hs_broker, "hs", tok) == ("jwt", sub, "true", "127.0.0.1")
    expect_200(hs_broker, "hs", tok)
    line = log_line_for(hs_broker, sub)
    assert line["auth"] == "jwt" and line["status"] == 200


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_public_key_algorithms_accepted(pk_broker, alg):
    sub = "pk-" + alg.lower()
    tok = asym(alg, sub=sub)
    assert echo(pk_broker, "rsa", tok) == ("jwt", sub, "true", "127.0.0.1")
    expect_200(pk_broker, "rsa", tok)
    line = log_line_for(pk_broker, sub)
    assert line["auth"] == "jwt" and line["status"] == 200


@pytest.mark.parametrize("alg,tenant", [("ES256", "es256"), ("ES384", "es384"), ("EdDSA", "eddsa")])
def test_ec_and_eddsa_public_key_algorithms_accepted(pk_broker, alg, tenant):
    sub = "pk-" + alg.lower()
    tok = asym(alg, sub=sub)
    assert echo(pk_broker, tenant, tok) == ("jwt", sub, "true", "127.0.0.1")
    expect_200(pk_broker, tenant, tok)
    assert log_line_for(pk_broker, sub)["auth"] == "jwt"


@pytest.mark.parametrize("alg", ALL_ASYM)
def test_jwks_file_algorithms_accepted_by_kid(jwks_broker, alg):
    sub = "jwks-" + alg.lower()
    tok = asym(alg, sub=sub, kid=kid_for(alg))
    assert echo(jwks_broker, "jwks", tok) == ("jwt", sub, "true", "127.0.0.1")
    expect_200(jwks_broker, "jwks", tok)
    assert log_line_for(jwks_broker, sub)["auth"] == "jwt"


def test_jwks_key_that_declares_its_alg_verifies_that_alg(jwks_broker):
    tok = asym("RS256", sub="declared", key=RSA_C, kid="rsa-rs256-only")
    assert echo(jwks_broker, "jwks", tok)[:2] == ("jwt", "declared")


def test_jwks_tenant_with_hmac_secret_accepts_both(jwks_broker):
    assert echo(jwks_broker, "jwks_hs", hs(sub="h"))[:2] == ("jwt", "h")
    assert echo(jwks_broker, "jwks_hs", asym("RS256", sub="r", kid="rsa-a"))[:2] == ("jwt", "r")


def test_pyjwt_accepts_our_hand_signed_tokens():
    # The forging helpers sign exactly as PyJWT verifies: the attacks below
    # differ from good tokens only where they say.
    for alg in ["HS256", "RS256", "PS384", "ES256", "ES384", "EdDSA"]:
        k = APP_SECRET if alg.startswith("HS") else key_for(alg)
        tok = forge({"alg": alg, "typ": "JWT"}, claims("x"), key=k)
        vk = APP_SECRET if alg.startswith("HS") else k.public_key()
        assert pyjwt.decode(tok, vk, algorithms=[alg])["sub"] == "x"


# ================================================================== claims reach the policy


def test_claims_reach_the_policy_as_lua_values(hs_broker):
    tok = hs(sub="c", n=42, f=1.5, s="text", b=True, nested={"k": [1, 2]})
    assert claim(hs_broker, "hs", tok, "n") == "claim=integer|42"
    assert claim(hs_broker, "hs", tok, "iat").startswith("claim=integer|")
    assert claim(hs_broker, "hs", tok, "f") == "claim=float|1.5"
    assert claim(hs_broker, "hs", tok, "s") == "claim=string|text"
    assert claim(hs_broker, "hs", tok, "b") == "claim=boolean|true"
    assert claim(hs_broker, "hs", tok, "nested").startswith("claim=table|")


def test_subject_from_configured_claim(hs_broker):
    tok = hs(sub="not-this", email="alice@example.com")
    assert echo(hs_broker, "subclaim", tok)[:2] == ("jwt", "alice@example.com")


def test_integer_subject(hs_broker):
    tok = hs(sub=12345)
    assert echo(hs_broker, "hs", tok)[:2] == ("jwt", "12345")


def test_absent_subject_is_empty(hs_broker):
    # A token without the subject claim authenticates with an empty subject:
    # policies that compare the subject with req.user_id refuse it naturally.
    tok = forge({"alg": "HS256"}, {"iat": int(time.time()), "exp": int(time.time()) + 300}, key=APP_SECRET)
    m, sub, a, _ = echo(hs_broker, "hs", tok)
    assert (m, a) == ("jwt", "true") and sub in ("", "nil"), (m, sub, a)


@pytest.mark.parametrize("sub", [1.5, True, {"id": "alice"}, ["alice"], "x" * 257, "ali\nce", "ali\u0000ce"])
def test_subject_claim_of_wrong_shape_is_401(hs_broker, sub):
    expect_401(hs_broker, "hs", hs(sub=sub))


def _raw_payload(sub_bytes):
    now = int(time.time())
    return b64u(b'{"sub":"' + sub_bytes + b'","iat":%d,"exp":%d}' % (now, now + 300))


@pytest.mark.parametrize("sub", [
    pytest.param(b"ali\xffce", id="raw-0xff"),
    pytest.param(b"ali\xc3", id="cut-sequence"),
    pytest.param(b"ali\xed\xa0\x80ce", id="raw-surrogate"),
    pytest.param(b"ali\\ud800ce", id="escaped-lone-surrogate"),
    pytest.param(b"ali\xc2\x85ce", id="c1-nel"),
    pytest.param(b"ali\\u009bce", id="escaped-c1-csi"),
])
def test_subject_that_is_not_utf8_text_is_401(hs_broker, sub):
    # Issue 10, L2: a signed sub holding raw 0xff was accepted and logged as is.
    tok = forge({"alg": "HS256", "typ": "JWT"}, _raw_payload(sub), key=APP_SECRET)
    expect_401(hs_broker, "hs", tok)


def test_subject_utf8_text_accepted(hs_broker):
    # The control: non-ASCII text is a fine subject.
    tok = forge({"alg": "HS256", "typ": "JWT"}, _raw_payload("z\u00f6\u65e5".encode()), key=APP_SECRET)
    assert echo(hs_broker, "hs", tok)[:3] == ("jwt", "z\u00f6\u65e5", "true")


def test_proxy_identity_that_is_not_utf8_text_is_401(modes_broker):
    status, body = post_raw_headers(modes_broker, "proxy_lo", [("X-Forwarded-User", b"bo\xffb")])
    assert status == 401, body


def test_subject_of_256_bytes_accepted(hs_broker):
    r = hs_broker.post(path("hs"), body={"user_id": "alice", "sublen": True}, token=hs(sub="s" * 256))
    assert r.status == 403 and r.json()["message"] == "sublen=256|jwt", r.body


def test_exp_within_leeway_accepted(hs_broker):
    assert echo(hs_broker, "claims", hs(ttl=-5, iss=ISSUER, aud=AUDIENCE))[0] == "jwt"


def test_issuer_and_audience_accepted(hs_broker):
    assert echo(hs_broker, "claims", hs(iss=ISSUER, aud=AUDIENCE))[0] == "jwt"
    assert echo(hs_broker, "claims", hs(iss=ISSUER, aud=["other", AUDIENCE]))[0] == "jwt"


def test_max_age_accepts_recent_iat(hs_broker):
    assert echo(hs_broker, "maxage", hs(iat=int(time.time()) - 60))[0] == "jwt"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
def test_required_typ_accepted(hs_broker, typ):
    # RFC 7515 §4.1.9: media types compare case-insensitively, "application/" may be omitted.
    assert echo(hs_broker, "typ", forge({"alg": "HS256", "typ": typ}, claims(), key=APP_SECRET))[0] == "jwt"


def sized_token(n):
    """A valid HS256 token of exactly n characters (padded with a claim)."""
    c = claims()
    for hdr in [{"alg": "HS256", "typ": "JWT"}, {"alg": "HS256"}]:  # base64 skips lengths 4k+1
        for k in range(n):
            c["pad"] = "x" * k
            tok = forge(hdr, c, key=APP_SECRET)
            if len(tok) == n:
                return tok
            if len(tok) > n:
                break
    raise AssertionError("no token of %d characters" % n)


def test_token_at_max_token_bytes_accepted(hs_broker):
    tok = sized_token(1024)
    assert echo(hs_broker, "small", tok)[0] == "jwt"


# ================================================================== the attack list


def test_control_good_tokens_are_issued(hs_broker, pk_broker, jwks_broker):
    # The same requests as the attacks below, with the genuine credential: 200.
    expect_200(hs_broker, "hs256", hs())
    expect_200(pk_broker, "rs256", asym("RS256"))
    expect_200(pk_broker, "es256", asym("ES256"))
    expect_200(jwks_broker, "jwks", asym("ES256", kid="ec256-a"))


ALG_NONE = ["none", "None", "NONE", "nOnE"]


@pytest.mark.parametrize("alg", ALG_NONE)
def test_attack_alg_none(hs_broker, pk_broker, jwks_broker, alg):
    for b, tenant in [(hs_broker, "hs256"), (pk_broker, "rs256"), (jwks_broker, "jwks")]:
        expect_401(b, tenant, forge({"alg": alg, "typ": "JWT"}, claims(), sig=""))
        # ... also with some "signature" and a kid the tenant knows.
        expect_401(b, tenant, forge({"alg": alg, "kid": "rsa-a"}, claims(), sig=b"x" * 32))


def test_attack_alg_none_pyjwt(hs_broker):
    tok = pyjwt.encode(claims(), None, algorithm="none")
    expect_401(hs_broker, "hs256", tok)


@pytest.mark.parametrize("variant", ["pem", "pem-no-newline", "der"])
def test_attack_hs256_signed_with_rsa_public_key(pk_broker, variant):
    # RS256-only tenant: the classic RS->HS confusion (the PEM file is public).
    k = pem(RSA_A)
    if variant == "pem-no-newline":
        k = k.rstrip(b"\n")
    elif variant == "der":
        k = RSA_A.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    for alg in ["HS256", "HS384", "HS512"]:
        expect_401(pk_broker, "rs256", forge({"alg": alg, "typ": "JWT"}, claims(), key=k))
        expect_401(pk_broker, "rsa", forge({"alg": alg, "typ": "JWT"}, claims(), key=k))


def test_attack_hs256_signed_with_jwks_public_key(jwks_broker):
    # A tenant with HS256 and a JWKS: a token naming an RSA key's kid, HMAC'd
    # with that key's PEM or its JWK modulus, is refused (a key verifies only
    # the algorithms of its type).
    for k in [pem(RSA_A), json.dumps(jwk(RSA_A, "rsa-a")).encode(), unb64u(jwk(RSA_A, "rsa-a")["n"])]:
        expect_401(jwks_broker, "jwks_hs", forge({"alg": "HS256", "kid": "rsa-a"}, claims(), key=k))
        expect_401(jwks_broker, "jwks", forge({"alg": "HS256", "kid": "rsa-a"}, claims(), key=k))


def test_attack_hs_and_rs_allowed_but_only_public_key(tmp_path, keydir):
    # A tenant that lists HS256 next to RS256 but gives only a public key has no
    # HMAC key at all: the configuration is refused, so the RSA public key can
    # never be used as an HMAC secret.
    cfg, env = write_config(tmp_path, jwt_auth(["HS256", "RS256"],
                                               'public_key = { file = %s },' % json.dumps(keydir["rsa"])))
    r = subprocess.run([BROKER_BIN, "check", "-c", cfg], env=env, capture_output=True, timeout=20)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert b"hmac_secret" in r.stderr + r.stdout, r.stderr
    r = subprocess.run([BROKER_BIN, "serve", "-c", cfg], env=env, capture_output=True, timeout=20)
    assert r.returncode == 1, (r.returncode, r.stderr)


BAD_AUTH_CONFIGS = [
    pytest.param(jwt_auth(["none"], 'hmac_secret = { env = "APP_JWT_SECRET" },'), "algorithms", id="alg-none-listed"),
    pytest.param(jwt_auth([], 'hmac_secret = { env = "APP_JWT_SECRET" },'), "algorithms", id="no-algorithms"),
    pytest.param(jwt_auth(["RS256"], 'hmac_secret = { env = "APP_JWT_SECRET" },'), "auth.jwt", id="rs256-with-only-hmac"),
    pytest.param(jwt_auth(["RS256"], 'public_key = { file = "EC256" },'), "public_key", id="ec-key-for-rs256"),
    pytest.param(jwt_auth(["RS256", "ES256"], 'public_key = { file = "RSA" },'), "algorithms", id="es256-without-ec-key"),
    pytest.param(jwt_auth(["RS256"], 'jwks = { url = "http://example.com/jwks.json" },'), "jwks", id="jwks-plain-http"),
    # Plain http is for loopback only, and "loopback" is the host, not a prefix of the URL.
    pytest.param(jwt_auth(["RS256"], 'jwks = { url = "http://127.0.0.1@example.com/jwks.json" },'), "jwks",
                 id="jwks-http-userinfo-bypass"),
    pytest.param(jwt_auth(["RS256"], 'jwks = { url = "http://127.example.com/jwks.json" },'), "jwks",
                 id="jwks-http-127-prefix-hostname"),
    pytest.param(jwt_auth(["RS256"], 'jwks = { url = "ftp://127.0.0.1/jwks.json" },'), "jwks", id="jwks-ftp"),
    pytest.param(jwt_auth(["RS256"], 'jwks = { url = "https://127.0.0.1:9/x", file = "JWKS" },'), "jwks",
                 id="jwks-file-and-url"),
    pytest.param(jwt_auth(["HS256"], 'hmac_secret = { env = "APP_JWT_SECRET" }, jwks = { file = "JWKS" },'), "jwks",
                 id="jwks-with-only-hs"),
    pytest.param('auth = { trusted_proxy = { header = "X-Forwarded-User", from = { } } },', "from", id="proxy-no-cidr"),
    pytest.param('auth = { trusted_proxy = { header = "X-Forwarded-User", from = { "10.1.2.3/8" } } },', "from",
                 id="proxy-cidr-host-bits"),
    pytest.param('auth = { trusted_proxy = { header = "X-Forwarded-User", from = { "0.0.0.0/33" } } },', "from",
                 id="proxy-cidr-prefix"),
    pytest.param('auth = { trusted_proxy = { header = "Authorization", from = { "127.0.0.1/32" } } },', "header",
                 id="proxy-header-authorization"),
    pytest.param('auth = { client_keys = { { name = "a", key = { env = "BILLING_KEY" } }, '
                 '{ name = "b", key = { env = "BILLING_KEY" } } } },', "client_keys", id="client-key-twice"),
    pytest.param('auth = { client_keys = { { name = "a b", key = { env = "BILLING_KEY" } } } },', "name",
                 id="client-key-name-space"),
    pytest.param('auth = { client_keys = { { name = "a", key = "literal-key-value" } } },', "key",
                 id="client-key-literal"),
    pytest.param('auth = { },', "auth", id="no-mode"),
]


@pytest.mark.parametrize("auth,names", BAD_AUTH_CONFIGS)
def test_config_refuses_unsafe_auth(tmp_path, keydir, auth, names):
    auth = auth.replace('"EC256"', json.dumps(keydir["ec256"])).replace('"RSA"', json.dumps(keydir["rsa"])) \
        .replace('"JWKS"', json.dumps(keydir["jwks"]))
    cfg, env = write_config(tmp_path, auth, env={"BILLING_KEY": BILLING_KEY})
    r = subprocess.run([BROKER_BIN, "check", "-c", cfg], env=env, capture_output=True, timeout=20)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 1, (r.returncode, out)
    assert names in out, out
    assert BILLING_KEY not in out and "literal-key-value" not in out


def test_attack_wrong_key(hs_broker, pk_broker, jwks_broker):
    expect_401(hs_broker, "hs256", hs(secret=OTHER_SECRET))
    expect_401(hs_broker, "hs", hs(secret=OTHER_SECRET, alg="HS512"))
    for alg in ["RS256", "PS256"]:
        expect_401(pk_broker, "rsa", asym(alg, key=RSA_B))
    expect_401(pk_broker, "es256", asym("ES256", key=EC256_B))
    expect_401(pk_broker, "eddsa", asym("EdDSA", key=ED_B))
    # JWKS: a kid the set has, signed by another key.
    expect_401(jwks_broker, "jwks", asym("RS256", key=RSA_B, kid="rsa-a"))
    expect_401(jwks_broker, "jwks", asym("ES256", key=EC256_B, kid="ec256-a"))
    expect_401(jwks_broker, "jwks", asym("EdDSA", key=ED_B, kid="ed-a"))
    # ... or a key of the right type under another key's kid.
    expect_401(jwks_broker, "jwks", asym("RS256", key=RSA_A, kid="rsa-rs256-only"))


def test_attack_curve_confusion(pk_broker, jwks_broker):
    # ES256 names P-256: a P-384 signature (96 bytes) under ES256 is refused,
    # and so is ES384 against a P-256 key.
    h = {"alg": "ES256", "kid": "ec384-a"}
    p = seg(claims())
    bad = forge(h, p, sig=sign("ES384", EC384_A, "%s.%s" % (seg(h), p)))
    expect_401(jwks_broker, "jwks", bad)
    expect_401(jwks_broker, "jwks", forge({"alg": "ES384", "kid": "ec256-a"}, claims(), key=EC256_A, alg="ES256"))
    expect_401(pk_broker, "es256", forge({"alg": "ES256"}, p, alg="ES384", key=EC384_A))


def _tamper(tok, **changes):
    h, p, s = tok.split(".")
    c = json.loads(unb64u(p))
    c.update(changes)
    return "%s.%s.%s" % (h, seg(c), s)


def test_attack_tampered_payload(hs_broker, pk_broker, jwks_broker):
    expect_401(hs_broker, "hs256", _tamper(hs(sub="alice"), sub="mallory"))
    expect_401(pk_broker, "rs256", _tamper(asym("RS256"), sub="mallory"))
    expect_401(pk_broker, "es256", _tamper(asym("ES256"), exp=int(time.time()) + 10 ** 8))
    expect_401(pk_broker, "eddsa", _tamper(asym("EdDSA"), sub="mallory"))
    expect_401(jwks_broker, "jwks", _tamper(asym("PS256", kid="rsa-a"), sub="mallory"))


def test_attack_tampered_header(pk_broker, jwks_broker):
    # Changing RS256 to RS512 in the header keeps the payload and the signature.
    tok = asym("RS256")
    _, p, s = tok.split(".")
    expect_401(pk_broker, "rsa", "%s.%s.%s" % (seg({"alg": "RS512", "typ": "JWT"}), p, s))
    tok = asym("PS256", kid="rsa-a")
    _, p, s = tok.split(".")
    expect_401(jwks_broker, "jwks", "%s.%s.%s" % (seg({"alg": "RS256", "kid": "rsa-a"}), p, s))


@pytest.mark.parametrize("shape", ["empty-sig", "two-segments", "sig-dot-only", "empty-everything", "dots"])
def test_attack_stripped_signature(hs_broker, pk_broker, shape):
    for b, tenant, tok in [(hs_broker, "hs256", hs()), (pk_broker, "rs256", asym("RS256")),
                           (pk_broker, "es256", asym("ES256"))]:
        h, p, _ = tok.split(".")
        bad = {"empty-sig": "%s.%s." % (h, p), "two-segments": "%s.%s" % (h, p),
               "sig-dot-only": "%s.%s.." % (h, p), "empty-everything": "..", "dots": "%s..%s" % (h, p)}[shape]
        expect_401(b, tenant, bad)


def test_attack_truncated_signature(hs_broker, pk_broker, jwks_broker):
    for b, tenant, tok in [(hs_broker, "hs256", hs()), (pk_broker, "rs256", asym("RS256")),
                           (pk_broker, "es256", asym("ES256")), (pk_broker, "eddsa", asym("EdDSA")),
                           (jwks_broker, "jwks", asym("ES384", kid="ec384-a"))]:
        h, p, s = tok.split(".")
        raw = unb64u(s)
        for cut in [1, 4, len(raw) // 2, len(raw) - 1]:
            expect_401(b, tenant, "%s.%s.%s" % (h, p, b64u(raw[:len(raw) - cut])))
        # Text truncation too (may leave an impossible base64 length).
        expect_401(b, tenant, "%s.%s.%s" % (h, p, s[:-1]))
        # And a signature with a byte appended.
        expect_401(b, tenant, "%s.%s.%s" % (h, p, b64u(raw + b"\0")))


@pytest.mark.parametrize("shape", ["trailing-dot", "four-segments", "five-segments-jwe-like", "leading-dot"])
def test_attack_extra_segments(hs_broker, pk_broker, shape):
    for b, tenant, tok in [(hs_broker, "hs256", hs()), (pk_broker, "rs256", asym("RS256"))]:
        bad = {"trailing-dot": tok + ".", "four-segments": tok + "." + tok.split(".")[2],
               "five-segments-jwe-like": tok + ".AAAA.BBBB", "leading-dot": "." + tok}[shape]
        expect_401(b, tenant, bad)


def _with_char(make, chars, tries=200):
    """Mints with make(i) until the result satisfies chars(tok): bounded."""
    for i in range(tries):
        tok = make(i)
        if chars(tok):
            return tok
    raise AssertionError("no token with the wanted characters in %d tries" % tries)


def test_attack_noncanonical_base64_signature(hs_broker):
    b = hs_broker
    # Padding on the signature (32 bytes -> 43 chars; "=" makes 44).
    tok = hs()
    h, p, s = tok.split(".")
    assert base64.urlsafe_b64decode(s + "=") == unb64u(s)
    expect_401(b, "hs256", "%s.%s.%s=" % (h, p, s))
    # Standard alphabet instead of base64url: same bytes to a lenient decoder.
    tok = _with_char(lambda i: hs(jti=str(i)), lambda t: "-" in t.split(".")[2] or "_" in t.split(".")[2])
    h, p, s = tok.split(".")
    std = s.replace("-", "+").replace("_", "/")
    assert base64.b64decode(std + "=") == unb64u(s)
    expect_401(b, "hs256", "%s.%s.%s" % (h, p, std))
    # Non-zero unused trailing bits: 43 chars carry 258 bits for 256; the last
    # char's low 2 bits are unused. A lenient decoder reads the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(s[-1])
    assert last & 3 == 0
    s2 = s[:-1] + alphabet[last | 1]
    assert base64.urlsafe_b64decode(s2 + "=") == unb64u(s)
    expect_401(b, "hs256", "%s.%s.%s" % (h, p, s2))
    # Whitespace or a character outside the alphabet inside the signature.
    expect_401(b, "hs256", "%s.%s.%s" % (h, p, s[:10] + " " + s[10:]))
    expect_401(b, "hs256", "%s.%s.%s" % (h, p, s[:10] + "%" + s[11:]))


def test_attack_noncanonical_base64_header_and_payload_resigned(hs_broker):
    # Each variant is re-signed with the right secret over the segments as
    # sent, so only the encoding is wrong.
    b = hs_broker
    h, p, _ = hs().split(".")
    for hh, pp in [(h + "=" * (-len(h) % 4 or 4), p), (h, p + "=" * (-len(p) % 4 or 4))]:
        expect_401(b, "hs256", forge(hh, pp, alg="HS256", key=APP_SECRET))
    tok = _with_char(lambda i: hs(jti="~" * (i % 7) + str(i)),
                     lambda t: any(c in t.split(".")[1] for c in "-_"))
    h, p, _ = tok.split(".")
    std = p.replace("-", "+").replace("_", "/")
    assert base64.b64decode(std + "=" * (-len(std) % 4)) == unb64u(p)
    expect_401(b, "hs256", forge(h, std, alg="HS256", key=APP_SECRET))
    # Trailing bits in the payload: pick a payload whose length is not a multiple of 3.
    tok = _with_char(lambda i: hs(jti="j" * i), lambda t: len(unb64u(t.split(".")[1])) % 3 != 0)
    h, p, _ = tok.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(p[-1])
    p2 = p[:-1] + alphabet[last | 1]
    assert p2 != p and unb64u(p2) == unb64u(p)
    expect_401(b, "hs256", forge(h, p2, alg="HS256", key=APP_SECRET))
    # A 4n+1 length segment is not base64 at all.
    p1 = p + "A" * ((1 - len(p)) % 4 or 4)
    assert len(p1) % 4 == 1
    expect_401(b, "hs256", forge(h, p1, alg="HS256", key=APP_SECRET))


def test_attack_noncanonical_base64_asymmetric(pk_broker):
    tok = asym("ES256")
    h, p, s = tok.split(".")  # 64 bytes -> 86 chars, padding "=="
    expect_401(pk_broker, "es256", "%s.%s.%s==" % (h, p, s))
    tok = asym("RS256")
    h, p, s = tok.split(".")
    expect_401(pk_broker, "rs256", "%s.%s.%s" % (h, p, s.replace("-", "+").replace("_", "/") + "=" * (-len(s) % 4)))


def test_attack_expired(hs_broker, pk_broker):
    expect_401(hs_broker, "hs256", hs(ttl=-3600))
    expect_401(hs_broker, "claims", hs(ttl=-31 - 10, iss=ISSUER, aud=AUDIENCE))  # past the 30 s leeway
    expect_401(pk_broker, "rs256", asym("RS256", ttl=-3600))
    expect_401(pk_broker, "eddsa", asym("EdDSA", ttl=-3600))


def test_attack_exp_missing_or_not_a_number(hs_broker):
    expect_401(hs_broker, "hs256", forge({"alg": "HS256", "typ": "JWT"}, {"sub": "alice", "iat": int(time.time())},
                                         key=APP_SECRET))
    expect_401(hs_broker, "hs256", hs(exp="9999999999"))


def test_attack_not_yet_valid(hs_broker, pk_broker):
    now = int(time.time())
    expect_401(hs_broker, "hs256", hs(nbf=now + 3600))
    expect_401(hs_broker, "claims", hs(nbf=now + 120, iss=ISSUER, aud=AUDIENCE))
    expect_401(pk_broker, "es256", asym("ES256", nbf=now + 3600))
    # Issued in the future (beyond leeway).
    expect_401(hs_broker, "hs256", hs(iat=now + 3600, ttl=7200))


def test_attack_max_age(hs_broker):
    expect_401(hs_broker, "maxage", hs(iat=int(time.time()) - 3600, ttl=300))


@pytest.mark.parametrize("iss", ["https://evil.example.com/", "https://issuer.example.com",
                                 "https://issuer.example.com/x", "https://issuer.example.com/ ",
                                 "HTTPS://ISSUER.EXAMPLE.COM/", "https://issuer.example.co", None])
def test_attack_wrong_issuer(hs_broker, iss):
    expect_401(hs_broker, "claims", hs(iss=iss, aud=AUDIENCE))


def test_attack_issuer_as_array(hs_broker):
    expect_401(hs_broker, "claims", hs(iss=[ISSUER], aud=AUDIENCE))


@pytest.mark.parametrize("aud", ["other", "courier-broker-x", "courier", "Courier-Broker", [], ["other"],
                                 ["courier", "broker"], [["courier-broker"]], 42, None])
def test_attack_wrong_audience(hs_broker, aud):
    expect_401(hs_broker, "claims", hs(iss=ISSUER, aud=aud))


@pytest.mark.parametrize("crit", [["x-unknown"], ["b64"], ["exp"], "x-unknown", [], ["kid"]])
def test_attack_crit(hs_broker, pk_broker, crit):
    # Any crit the broker does not understand is refused (it understands none);
    # an empty list and a non-list are malformed (RFC 7515 §4.1.11).
    hdr = {"alg": "HS256", "typ": "JWT", "crit": crit, "x-unknown": 1, "b64": True}
    expect_401(hs_broker, "hs256", forge(hdr, claims(), key=APP_SECRET))
    hdr = {"alg": "RS256", "crit": crit, "x-unknown": 1}
    expect_401(pk_broker, "rs256", forge(hdr, claims(), key=RSA_A))


def test_attack_oversized_token(hs_broker):
    # Over the default 8 KiB: a validly signed token with a huge header.
    big = forge({"alg": "HS256", "typ": "JWT", "pad": "x" * 9000}, claims(), key=APP_SECRET)
    expect_401(hs_broker, "hs256", big)
    # Over a tenant's smaller limit (1024), one byte too many.
    expect_401(hs_broker, "small", sized_token(1025))
    assert echo(hs_broker, "hs256", sized_token(1025))[0] == "jwt"  # the default limit is larger
    # A huge payload too.
    expect_401(hs_broker, "hs256", hs(pad="y" * 9000))


def test_attack_malformed_json(hs_broker):
    now = int(time.time())
    good_payload = '{"sub":"alice","iat":%d,"exp":%d}' % (now, now + 300)
    bad = [
        ('{"alg":"HS256"', good_payload),                      # header not JSON
        ('["HS256"]', good_payload),                            # header not an object
        ('{"alg":"HS256","alg":"none"}', good_payload),         # duplicate alg
        ('{"alg":"HS256"}', '["alice"]'),                      # payload not an object
        ('{"alg":"HS256"}', good_payload[:-1]),                 # payload not JSON
        ('{"alg":"HS256"}', '{"sub":"alice","exp":NaN}'),
        ('{"alg":"HS256"}', '{"sub":"alice","exp":0x7fffffff}'),
        ('{"alg":"HS256"}', '{"sub":"alice","exp":%d} trailing' % (now + 300)),
        ('{"alg":256}', good_payload),                          # alg not a string
        ('{}', good_payload),                                   # no alg
    ]
    for h, p in bad:
        expect_401(hs_broker, "hs256", forge(b64u(h.encode()), b64u(p.encode()), alg="HS256", key=APP_SECRET))


@pytest.mark.parametrize("typ", [None, "JWT", "at+JWT-x", "application/jwt", "jwt"])
def test_attack_wrong_typ(hs_broker, typ):
    hdr = {"alg": "HS256"}
    if typ:
        hdr["typ"] = typ
    expect_401(hs_broker, "typ", forge(hdr, claims(), key=APP_SECRET))


def test_attack_alg_not_in_allow_list(pk_broker, hs_broker):
    # Validly signed with the right key, but under an algorithm the tenant does not list.
    expect_401(pk_broker, "rs256", asym("PS256"))
    expect_401(pk_broker, "rs256", asym("RS512"))
    expect_401(hs_broker, "hs256", hs(alg="HS512"))
    expect_401(pk_broker, "es256", forge({"alg": "ES384"}, claims(), key=EC256_A, alg="ES256"))


def test_attack_unknown_kid(jwks_broker):
    for alg in ["RS256", "ES256", "EdDSA"]:
        expect_401(jwks_broker, "jwks", asym(alg, kid="no-such-kid"))
        expect_401(jwks_broker, "jwks", asym(alg, kid=kid_for(alg) + "x"))
        expect_401(jwks_broker, "jwks", asym(alg, kid=kid_for(alg).upper()))


@pytest.mark.parametrize("kid", ["../../etc/passwd", "/etc/passwd", "../../../../dev/null", "rsa-a/../rsa-a",
                                 "rsa-a\u0000", "rsa-a%00", "file:///etc/passwd", "' OR '1'='1", "x" * 5000])
def test_attack_kid_with_path_characters(jwks_broker, pk_broker, kid):
    # The classic: kid naming /dev/null and an empty HMAC key, or a path to a public file.
    for k in [b"", b"\n", open("/etc/passwd", "rb").read()]:
        expect_401(jwks_broker, "jwks_hs", forge({"alg": "HS256", "kid": kid}, claims(), key=k))
    expect_401(jwks_broker, "jwks", forge({"alg": "RS256", "kid": kid}, claims(), key=RSA_B))
    expect_401(pk_broker, "rs256", forge({"alg": "RS256", "kid": kid}, claims(), key=RSA_B))


@pytest.mark.parametrize("kid", [1, None, ["rsa-a"], {"k": "rsa-a"}, True])
def test_attack_kid_not_a_string(jwks_broker, kid):
    expect_401(jwks_broker, "jwks", forge({"alg": "RS256", "kid": kid}, claims(), key=RSA_B))


def _ecdsa_bad(alg, kid=None):
    hdr = {"alg": alg}
    if kid:
        hdr["kid"] = kid
    size = 32 if alg == "ES256" else 48
    out = [b"\0" * (2 * size)]                                       # r = s = 0 (CVE-2022-21449)
    if alg == "ES256":
        o = P256_ORDER.to_bytes(32, "big")
        out += [o + o,                                               # r = s = n
                b"\0" * 31 + b"\1" + o,                              # s = n
                b"\xff" * 64]                                        # r, s > n
    out += [b"\0" * size + b"\0" * (size - 1) + b"\1",               # r = 0
            b"\0" * (size - 1) + b"\1" + b"\0" * size]               # s = 0
    return [forge(hdr, claims(), sig=s) for s in out]


def test_attack_ecdsa_zero_and_out_of_range(pk_broker, jwks_broker):
    for tok in _ecdsa_bad("ES256"):
        expect_401(pk_broker, "es256", tok)
    for tok in _ecdsa_bad("ES256", kid="ec256-a"):
        expect_401(jwks_broker, "jwks", tok)
    for tok in _ecdsa_bad("ES384", kid="ec384-a"):
        expect_401(jwks_broker, "jwks", tok)
    for tok in _ecdsa_bad("ES384"):
        expect_401(pk_broker, "es384", tok)


def test_attack_ecdsa_der_signature(pk_broker):
    # JWS ECDSA signatures are raw r||s; a DER signature (what OpenSSL makes) is refused.
    h, p = seg({"alg": "ES256"}), seg(claims())
    der = EC256_A.sign(("%s.%s" % (h, p)).encode(), ec.ECDSA(hashes.SHA256()))
    expect_401(pk_broker, "es256", "%s.%s.%s" % (h, p, b64u(der)))


def test_attack_eddsa_zero_signature(pk_broker):
    expect_401(pk_broker, "eddsa", forge({"alg": "EdDSA"}, claims(), sig=b"\0" * 64))


@pytest.mark.parametrize("kid,alg,key", [
    ("rsa-a", "ES256", EC256_A),       # an RSA key's kid, signed as ES256 (by a key the set has)
    ("rsa-a", "EdDSA", ED_A),
    ("ec256-a", "RS256", RSA_A),       # an EC key's kid, signed as RS256
    ("ec256-a", "EdDSA", ED_A),
    ("ed-a", "ES256", EC256_A),
    ("ed-a", "PS256", RSA_A),
    ("ec384-a", "ES256", EC256_A),     # a P-384 key named, a P-256 signature
    ("rsa-rs256-only", "PS256", RSA_C),  # the key declares alg RS256: PS256 is another algorithm
])
def test_attack_jwks_key_used_with_another_algorithm(jwks_broker, kid, alg, key):
    expect_401(jwks_broker, "jwks", forge({"alg": alg, "kid": kid}, claims(), key=key))


def test_attack_jwks_rsa_kid_with_hs256(jwks_broker):
    # alg HS256 naming the RSA key: HMAC'd with the broker's own HMAC secret
    # would prove nothing; HMAC'd with anything derived from the public key is
    # the confusion attack, on the tenant that allows HS256.
    rsa_jwk = jwk(RSA_A, "rsa-a")
    for k in [pem(RSA_A), unb64u(rsa_jwk["n"]), rsa_jwk["n"].encode(), json.dumps(rsa_jwk).encode()]:
        expect_401(jwks_broker, "jwks_hs", forge({"alg": "HS256", "kid": "rsa-a"}, claims(), key=k))


def test_attack_jwks_keys_the_broker_must_not_use(jwks_broker):
    # An encryption key (use "enc"), a symmetric key published in the JWKS, a
    # 1024-bit RSA key, a private key: skipped at load, so tokens naming them
    # (or naming none and signed by them) are refused.
    expect_401(jwks_broker, "jwks", asym("EdDSA", key=ED_B, kid="ed-private"))
    expect_401(jwks_broker, "jwks", asym("EdDSA", key=ED_B))
    expect_401(jwks_broker, "jwks", asym("RS256", key=RSA_C, kid="enc-key"))
    expect_401(jwks_broker, "jwks", asym("RS256", key=RSA_1024, kid="rsa-1024"))
    for tenant in ["jwks", "jwks_hs"]:
        expect_401(jwks_broker, tenant, forge({"alg": "HS256", "kid": "oct"}, claims(), key=OCT_SECRET))
    # The rest of the set is still in use.
    assert echo(jwks_broker, "jwks", asym("RS256", kid="rsa-a", sub="after-skips"))[:2] == ("jwt", "after-skips")


def test_jwks_token_without_kid_tried_against_keys_of_its_alg(jwks_broker):
    assert echo(jwks_broker, "jwks", asym("ES256", sub="no-kid"))[:2] == ("jwt", "no-kid")
    assert echo(jwks_broker, "jwks", asym("EdDSA", sub="no-kid-ed"))[:2] == ("jwt", "no-kid-ed")
    expect_401(jwks_broker, "jwks", asym("ES256", key=EC256_B))


def test_attack_jwk_embedded_in_header(jwks_broker, pk_broker):
    # jwk / jku / x5u / x5c in the header never supply the key.
    for hdr in [{"alg": "RS256", "jwk": jwk(RSA_B, "evil")},
                {"alg": "RS256", "kid": "evil", "jwk": jwk(RSA_B, "evil")},
                {"alg": "RS256", "kid": "rsa-a", "jwk": jwk(RSA_B, "rsa-a")},
                {"alg": "RS256", "x5c": [base64.b64encode(b"not a cert").decode()]}]:
        expect_401(jwks_broker, "jwks", forge(hdr, claims(), key=RSA_B))
        expect_401(pk_broker, "rs256", forge(hdr, claims(), key=RSA_B))


def test_401_credential_and_reason_never_leak(hs_broker):
    bad = hs(secret="leaked-looking-secret-value-0123456789")
    r = expect_401(hs_broker, "hs256", bad)
    assert bad.split(".")[2] not in r.body.decode()
    time.sleep(0.05)
    text = hs_broker.p.text()
    assert bad not in text and bad.split(".")[2] not in text
    assert APP_SECRET not in text


# ================================================================== client_keys


def test_client_key_accepted_with_its_name(modes_broker):
    assert echo(modes_broker, "ck", BILLING_KEY) == ("client_key", "billing-backend", "true", "127.0.0.1")
    assert echo(modes_broker, "ck", OPS_KEY)[:2] == ("client_key", "ops")
    expect_200(modes_broker, "ck", BILLING_KEY)
    line = log_line_for(modes_broker, "billing-backend")
    assert line["auth"] == "client_key"
    text = modes_broker.p.text()
    assert BILLING_KEY not in text and OPS_KEY not in text


@pytest.mark.parametrize("bad", [
    "bk_live_9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9d",        # last char differs
    BILLING_KEY[:-1],                                   # a prefix
    BILLING_KEY + "0",                                  # longer
    BILLING_KEY.upper(),
    "x",
])
def test_client_key_wrong_key(modes_broker, bad):
    expect_401(modes_broker, "ck", bad)


def test_client_key_other_schemes_refused(modes_broker):
    expect_401(modes_broker, "ck")
    expect_401(modes_broker, "ck", headers={"Authorization": "Basic " + base64.b64encode(BILLING_KEY.encode()).decode()})
    expect_401(modes_broker, "ck", headers={"Authorization": BILLING_KEY})
    expect_401(modes_broker, "ck", headers={"X-Api-Key": BILLING_KEY})


def test_client_key_tenant_refuses_jwt_shaped_bearer(modes_broker):
    # Only client_keys configured: a JWT (even a valid one for another tenant) is 401.
    expect_401(modes_broker, "ck", hs())
    expect_401(modes_broker, "ck", "a.b.c")


# ================================================================== trusted_proxy


def test_trusted_proxy_from_listed_cidr(modes_broker):
    assert echo(modes_broker, "proxy_lo", headers={"X-Forwarded-User": "bob"}) == ("proxy", "bob", "true", "127.0.0.1")
    assert echo(modes_broker, "proxy_net", headers={"X-Remote-User": "carol@example.com"})[:2] == \
        ("proxy", "carol@example.com")
    expect_200(modes_broker, "proxy_lo", headers={"X-Forwarded-User": "proxy-dave"})
    assert log_line_for(modes_broker, "proxy-dave")["auth"] == "proxy"


def test_trusted_proxy_header_name_is_case_insensitive(modes_broker):
    assert echo(modes_broker, "proxy_lo", headers={"x-forwarded-user": "erin"})[:2] == ("proxy", "erin")


def test_trusted_proxy_without_header_is_401(modes_broker):
    expect_401(modes_broker, "proxy_lo")
    # A different header than the configured one is no credential.
    expect_401(modes_broker, "proxy_net", headers={"X-Forwarded-User": "bob"})


def test_trusted_proxy_header_ignored_from_unlisted_peer(modes_broker):
    # 127.0.0.1 is not in 10.0.0.0/8: the header is ignored, and with none = false that is a 401.
    expect_401(modes_broker, "proxy_far", headers={"X-Forwarded-User": "bob"})
    # With none = true, the requester is anonymous: the header did not make it "bob".
    m, s, a, _ = echo(modes_broker, "proxy_far_none", headers={"X-Forwarded-User": "bob"})
    assert (m, a) == ("none", "false") and s in ("nil", ""), (m, s, a)


def test_trusted_proxy_header_does_not_authenticate_other_modes(modes_broker):
    # A tenant without trusted_proxy never reads the header.
    expect_401(modes_broker, "ck", headers={"X-Forwarded-User": "billing-backend"})
    m, s, a, _ = echo(modes_broker, "jwt_none", headers={"X-Forwarded-User": "bob"})
    assert (m, a) == ("none", "false") and s != "bob"


def post_raw_headers(b, tenant, headers):
    """POST with a list of (name, value) header pairs: repeats allowed."""
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
    body = json.dumps({"user_id": "alice"}).encode()
    try:
        conn.putrequest("POST", path(tenant))
        for k, v in [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] + list(headers):
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_trusted_proxy_bad_identity_header_is_401(modes_broker):
    d = modes_broker.double
    before = d.served()
    # Sent twice (which one would the proxy have meant?), empty, or too long.
    for hs_ in [[("X-Forwarded-User", "bob"), ("X-Forwarded-User", "mallory")],
                [("X-Forwarded-User", "")],
                [("X-Forwarded-User", "u" * 257)]]:
        status, body = post_raw_headers(modes_broker, "proxy_lo", hs_)
        assert status == 401, (hs_[0][1][:10], status, body)
    assert d.served() == before
    status, body = post_raw_headers(modes_broker, "proxy_lo", [("X-Forwarded-User", "u" * 256)])
    assert status == 200, body


def test_trusted_proxy_with_authorization_header_is_not_proxy(modes_broker):
    # A credential nobody verified is refused even when the proxy vouches for someone.
    expect_401(modes_broker, "proxy_lo", "some-token", headers={"X-Forwarded-User": "bob"})
    expect_401(modes_broker, "proxy_lo", headers={"X-Forwarded-User": "bob", "Authorization": "Basic Ym9iOng="})


@pytest.mark.parametrize("xff,ip", [
    (None, "127.0.0.1"),
    ("203.0.113.7", "203.0.113.7"),
    ("203.0.113.7, 198.51.100.2", "198.51.100.2"),   # the right-most untrusted entry
    ("198.51.100.9, 127.0.0.1", "198.51.100.9"),     # a trusted hop is skipped
    ("198.51.100.9,127.0.0.1,127.0.0.1", "198.51.100.9"),
])
def test_client_ip_from_x_forwarded_for_when_peer_trusted(modes_broker, xff, ip):
    h = {"X-Forwarded-User": "bob"}
    if xff:
        h["X-Forwarded-For"] = xff
    assert echo(modes_broker, "proxy_lo", headers=h)[3] == ip


def test_x_forwarded_for_past_the_lines_read_is_refused(modes_broker):
    # Issue 10, M2: a proxy that appends its own line (HAProxy "option forwardfor")
    # after 16 client lines. The old code read lines 1..16 and served the
    # client's chosen address; now the request is refused, never guessed.
    d = modes_broker.double
    before = d.served()
    lines = [("X-Forwarded-User", "bob")] + [("X-Forwarded-For", "203.0.113.66")] * 16 + \
        [("X-Forwarded-For", "198.51.100.7")]
    status, body = post_raw_headers(modes_broker, "proxy_lo", lines)
    assert status == 400, body
    assert json.loads(body)["error"] == "invalid_request"
    assert d.served() == before
    # 16 lines are read whole: served.
    status, body = post_raw_headers(modes_broker, "proxy_lo", lines[:16] + lines[-1:])
    assert status == 200, body


def test_client_ip_ignores_x_forwarded_for_from_untrusted_peer(modes_broker):
    h = {"X-Forwarded-User": "bob", "X-Forwarded-For": "203.0.113.7"}
    assert echo(modes_broker, "proxy_far_none", headers=h)[3] == "127.0.0.1"
    h = {"X-Forwarded-For": "203.0.113.7"}
    assert echo(modes_broker, "jwt_none", hs(sub="x"), headers=h)[3] == "127.0.0.1"


# ================================================================== several modes


def test_multi_modes_each_credential_its_mode(modes_broker):
    assert echo(modes_broker, "multi", hs(sub="jwt-user"))[:3] == ("jwt", "jwt-user", "true")
    assert echo(modes_broker, "multi", BILLING_KEY)[:3] == ("client_key", "billing-backend", "true")
    m, _, a, _ = echo(modes_broker, "multi")
    assert (m, a) == ("none", "false")


@pytest.mark.parametrize("cred", ["bad-jwt", "expired-jwt", "alg-none", "bad-client-key", "basic", "bearer-empty",
                                  "jwt-shaped-garbage"])
def test_invalid_credential_never_falls_through_to_none(modes_broker, cred):
    h = {
        "bad-jwt": {"Authorization": "Bearer " + hs(secret=OTHER_SECRET)},
        "expired-jwt": {"Authorization": "Bearer " + hs(ttl=-3600)},
        "alg-none": {"Authorization": "Bearer " + forge({"alg": "none"}, claims(), sig="")},
        "bad-client-key": {"Authorization": "Bearer " + BILLING_KEY[:-1] + "X"},
        "basic": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "bearer-empty": {"Authorization": "Bearer "},
        "jwt-shaped-garbage": {"Authorization": "Bearer a.b.c"},
    }[cred]
    expect_401(modes_broker, "multi", headers=h)
    expect_401(modes_broker, "jwt_none", headers=h)


def test_jwt_shaped_client_key_goes_to_jwt(modes_broker):
    # With jwt and client_keys both configured, a bearer with two dots is a JWT:
    # a client key never matches it (and the JWT is checked as one).
    expect_401(modes_broker, "multi", "x.y.z")
    assert echo(modes_broker, "multi", hs(sub="dots"))[:2] == ("jwt", "dots")


def test_invalid_jwt_never_falls_through_to_proxy(modes_broker):
    h = {"X-Forwarded-User": "bob", "Authorization": "Bearer " + hs(secret=OTHER_SECRET)}
    expect_401(modes_broker, "jwt_proxy", headers=h)
    # The proxy header alone authenticates; the JWT alone too.
    assert echo(modes_broker, "jwt_proxy", headers={"X-Forwarded-User": "bob"})[:2] == ("proxy", "bob")
    assert echo(modes_broker, "jwt_proxy", hs(sub="jwt-only"))[:2] == ("jwt", "jwt-only")


# ================================================================== JWKS by URL


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 serving a mutable document and counting fetches."""

    def __init__(self, doc, max_age=300, listen=True):
        self.doc = doc
        self.max_age = max_age
        self.status = 200
        self.raw = None  # bytes to serve instead of the document
        self.fetches = 0
        self.paths = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    outer.paths.append(self.path)
                    if self.path != "/jwks.json":
                        body, status = b"not found", 404
                    else:
                        outer.fetches += 1
                        body = outer.raw if outer.raw is not None else json.dumps(outer.doc).encode()
                        status = outer.status
                    age = outer.max_age
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if age is not None:
                    self.send_header("Cache-Control", "public, max-age=%d" % age)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
        self.httpd.daemon_threads = True
        self.httpd.server_bind()  # bound but not listening: connections are refused
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/jwks.json" % self.port
        self.thread = None
        if listen:
            self.start()

    def start(self):
        self.httpd.server_activate()
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def set(self, doc=None, status=200, raw=None, max_age=None):
        with self.lock:
            if doc is not None:
                self.doc = doc
            self.status = status
            self.raw = raw
            if max_age is not None:
                self.max_age = max_age

    def count(self):
        with self.lock:
            return self.fetches

    def stop(self):
        if self.thread:
            self.httpd.shutdown()
        self.httpd.server_close()


K1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
K2 = ec.generate_private_key(ec.SECP256R1())


def url_auth(url, min_refresh_s=1, cooldown_s=1, max_cache_s=3600):
    return jwt_auth(["RS256", "ES256"], 'jwks = { url = %s, min_refresh_s = %d, max_cache_s = %d, cooldown_s = %d },'
                    % (json.dumps(url), min_refresh_s, max_cache_s, cooldown_s))


def jwks_log(b):
    """The broker's log lines about its JWKS (for failure messages)."""
    return [l for l in b.p.text().splitlines() if "jwks" in l.lower()][-20:]


def wait_ready(b, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b.get("/readyz").status == 200:
            return
        time.sleep(0.05)
    raise AssertionError("broker not ready:\n" + b.p.text()[-3000:])


def until(pred, timeout=8.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def status_of(b, tok):
    return b.post(path("default"), body={"user_id": "alice"}, token=tok).status


@pytest.fixture
def jwks_server():
    servers = []

    def make(doc, **kw):
        s = JwksServer(doc, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def test_jwks_url_rotation(broker_factory, double, jwks_server):
    srv = jwks_server({"keys": [jwk(K1, "k1")]}, max_age=300)
    b = broker_factory(tenants={"default": {"auth": url_auth(srv.url)}}, policies={"default": ECHO_POLICY})
    wait_ready(b)
    assert srv.count() >= 1
    tok1 = asym("RS256", key=K1, kid="k1", sub="old")
    expect_200(b, "default", tok1)
    start_fetches = srv.count()

    # A new key is published beside the old one. A token naming it is refused
    # until one refresh (an unknown kid triggers it), then accepted.
    srv.set({"keys": [jwk(K1, "k1"), jwk(K2, "k2")]})
    time.sleep(1.2)  # past the cool-down of the first fetch
    tok2 = asym("ES256", key=K2, kid="k2", sub="new")
    statuses = []

    def try_new():
        statuses.append(status_of(b, tok2))
        return statuses[-1] == 200

    assert until(try_new, timeout=8.0, step=0.1), (statuses, srv.count(), start_fetches, jwks_log(b))
    assert set(statuses) <= {401, 200}, statuses
    assert srv.count() - start_fetches in (1, 2), (srv.count(), start_fetches)
    assert double.served() == 2  # tok1 once, tok2 once: no 401 issued anything
    # The old token keeps working while its key is published.
    expect_200(b, "default", tok1)
    assert echo(b, "default", tok2)[:2] == ("jwt", "new")

    # Misses are bounded by the cool-down: ~20 unknown-kid requests in ~2 s.
    before, t0 = srv.count(), time.monotonic()
    for i in range(20):
        expect_401(b, "default", asym("RS256", key=K1, kid="unknown-%d" % i))
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    assert srv.count() - before <= int(elapsed / 1.0) + 2, (srv.count() - before, elapsed)

    # Concurrent misses share one fetch.
    time.sleep(1.2)
    before = srv.count()
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        status_of(b, asym("RS256", key=K1, kid="burst-%d" % i)))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [401] * 8, results
    time.sleep(0.3)
    assert srv.count() - before <= 1, srv.count() - before
    assert double.served() == 3


def test_jwks_url_withdrawn_key_stops_working_and_failed_fetch_keeps_last_good(broker_factory, double, jwks_server):
    srv = jwks_server({"keys": [jwk(K1, "k1")]}, max_age=1)
    b = broker_factory(tenants={"default": {"auth": url_auth(srv.url)}}, policies={"default": ECHO_POLICY})
    wait_ready(b)
    tok1 = asym("RS256", key=K1, kid="k1", sub="old")
    tok2 = asym("ES256", key=K2, kid="k2", sub="new")
    expect_200(b, "default", tok1)

    # The JWKS server fails (500, then garbage, then a set without keys): the
    # broker keeps the last good set, across several cache lifetimes.
    for failure in [dict(status=500), dict(raw=b"{not json"), dict(raw=b'{"keys": 5}')]:
        before = srv.count()
        srv.set(**failure)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert status_of(b, tok1) == 200
            time.sleep(0.2)
        assert srv.count() > before, "the broker never refetched after max-age"

    # Rotation: k1 withdrawn, k2 published. Once the cache expires (max-age 1)
    # the old token is refused and the new one accepted.
    srv.set({"keys": [jwk(K2, "k2")]})
    assert until(lambda: status_of(b, tok1) == 401, timeout=8.0), (srv.count(), jwks_log(b))
    assert until(lambda: status_of(b, tok2) == 200, timeout=8.0), (srv.count(), jwks_log(b))


def test_jwks_url_max_age_zero_is_bounded_by_min_refresh(broker_factory, double, jwks_server):
    srv = jwks_server({"keys": [jwk(K1, "k1")]}, max_age=0)
    b = broker_factory(tenants={"default": {"auth": url_auth(srv.url, min_refresh_s=1)}},
                       policies={"default": ECHO_POLICY})
    wait_ready(b)
    tok1 = asym("RS256", key=K1, kid="k1")
    before, t0 = srv.count(), time.monotonic()
    for _ in range(30):
        assert status_of(b, tok1) == 200
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    assert srv.count() - before <= int(elapsed / 1.0) + 2, (srv.count() - before, elapsed)


def test_jwks_url_jku_and_x5u_are_ignored(broker_factory, double, jwks_server):
    srv = jwks_server({"keys": [jwk(K1, "k1")]})
    evil = jwks_server({"keys": [jwk(RSA_B, "evil"), jwk(RSA_B, "k1")]})
    b = broker_factory(tenants={"default": {"auth": url_auth(srv.url)}}, policies={"default": ECHO_POLICY})
    wait_ready(b)
    for hdr in [{"alg": "RS256", "kid": "evil", "jku": evil.url}, {"alg": "RS256", "kid": "k1", "jku": evil.url},
                {"alg": "RS256", "kid": "evil", "x5u": evil.url}, {"alg": "RS256", "x5u": evil.url}]:
        expect_401(b, "default", forge(hdr, claims(), key=RSA_B))
    time.sleep(0.3)
    assert evil.count() == 0 and evil.paths == []
    assert all(p == "/jwks.json" for p in srv.paths)


def test_jwks_url_unreachable_at_start_fails_the_load(tmp_path, jwks_server):
    # The JWKS server's port is bound but not listening: the first fetch is
    # refused. The first fetch is part of loading the configuration, so
    # `check` and `serve` both fail (exit 1) and say why; once the server
    # answers, the same configuration loads.
    srv = jwks_server({"keys": [jwk(K1, "k1")]}, listen=False)
    cfg, env = write_config(tmp_path, url_auth(srv.url))
    r = subprocess.run([BROKER_BIN, "check", "-c", cfg], env=env, capture_output=True, timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert b"jwks" in (r.stdout + r.stderr).lower(), r.stderr
    r = subprocess.run([BROKER_BIN, "serve", "-c", cfg], env=env, capture_output=True, timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert b"listening on" not in r.stderr
    assert srv.count() == 0
    srv.start()
    r = subprocess.run([BROKER_BIN, "check", "-c", cfg], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert srv.count() >= 1


# ================================================================== RFC 9864: "Ed25519"


def ed(alg, sub="alice", key=ED_A, kid=None):
    """An Ed25519 token under either name (PyJWT knows only "EdDSA")."""
    hdr = {"alg": alg, "typ": "JWT"}
    if kid:
        hdr["kid"] = kid
    return forge(hdr, claims(sub), key=key)


@pytest.fixture(scope="module")
def ed25519_broker(tmp_path_factory, keydir):
    """Keys and allow-lists named the RFC 9864 way, as jose 6 writes them."""
    d = tmp_path_factory.mktemp("ed25519")
    doc = {"keys": [jwk(ED_A, "ed-rfc9864", alg="Ed25519"), jwk(ED_B, "ed-b-eddsa", alg="EdDSA")]}
    f = write_private(d / "jwks9864.json", json.dumps(doc))
    t = {
        "jwks9864": {"auth": jwt_auth(["Ed25519"], 'jwks = { file = %s },' % json.dumps(f))},
        "pk9864": {"auth": jwt_auth(["Ed25519"], 'public_key = { file = %s },' % json.dumps(keydir["ed"]))},
    }
    s = Shared(d, t)
    yield s.broker
    s.stop()


@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
def test_ed25519_jwk_and_token_alg_accepted(ed25519_broker, alg):
    sub = "ed9864-jwks-" + alg.lower()
    tok = ed(alg, sub=sub, key=ED_A, kid="ed-rfc9864")
    assert echo(ed25519_broker, "jwks9864", tok) == ("jwt", sub, "true", "127.0.0.1")
    expect_200(ed25519_broker, "jwks9864", tok)
    # A JWK that says "EdDSA" serves an "Ed25519" allow-list too: one algorithm.
    sub = "ed9864-b-" + alg.lower()
    assert echo(ed25519_broker, "jwks9864", ed(alg, sub=sub, key=ED_B, kid="ed-b-eddsa"))[:2] == ("jwt", sub)


def test_ed25519_token_alg_with_a_public_key_file(ed25519_broker, pk_broker):
    assert echo(ed25519_broker, "pk9864", ed("Ed25519", sub="ed9864-pk", key=ED_A))[:2] == ("jwt", "ed9864-pk")
    # The EdDSA tenant takes the RFC 9864 name as well.
    assert echo(pk_broker, "eddsa", ed("Ed25519", sub="ed9864-old", key=ED_A))[:2] == ("jwt", "ed9864-old")


def test_ed25519_wrong_key_still_refused(ed25519_broker):
    expect_401(ed25519_broker, "jwks9864", ed("Ed25519", key=ED_B, kid="ed-rfc9864"))
    expect_401(ed25519_broker, "pk9864", ed("Ed25519", key=ED_B))
