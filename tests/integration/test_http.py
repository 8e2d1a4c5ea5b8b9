"""The HTTP API, row by row of the contract's status table.

Every test talks to the real broker and the Courier test double on 127.0.0.1
through the fixtures of conftest.py. Each answer is checked for its status,
its JSON error code and the headers the status implies; each refusal also
checks that Courier was not called (no token can have been issued).
"""
import base64
import hashlib
import http.client
import json
import re
import socket
import threading
import time

import jwt as pyjwt
import pytest

from conftest import APP_SECRET, COURIER_KEY, Broker, Double, mint, policy, request, token_lines, wait_token_lines

DOUBLE_SECRET = "double-signing-secret"
INBOX = "inbox:read:messages inbox:write:events read:brands"
MAX_BODY = 16 * 1024


def allow_policy(tier="inbox", expires_in='"1h"', reason="test"):
    return policy('  return { allow = true, tier = "%s", expires_in = %s, reason = "%s" }' % (tier, expires_in, reason))


def expect_error(r, status, code):
    assert r.status == status, (r.status, r.body)
    assert r.header("Content-Type") is not None and r.header("Content-Type").startswith("application/json"), r.headers
    doc = r.json()
    assert doc["error"] == code, doc
    assert isinstance(doc.get("message"), str) and doc["message"], doc
    assert "token" not in doc
    return doc


def b64url(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# ------------------------------------------------------------------- 200


def test_200_token_fields_headers_and_signature(broker, double):
    r = broker.post(body={"user_id": "alice"}, token=mint())
    assert r.status == 200, r.body
    assert r.header("Content-Type").startswith("application/json")
    doc = r.json()
    assert set(doc) >= {"token", "user_id", "scope", "expires_in", "expires_at"}, doc
    assert doc["user_id"] == "alice"
    assert doc["scope"] == "user_id:alice " + INBOX
    assert doc["expires_in"] == 3600
    assert r.header("X-Policy-Revision"), r.headers

    # expires_at is the token's own exp, read without verification.
    unverified = pyjwt.decode(doc["token"], options={"verify_signature": False})
    exp_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unverified["exp"]))
    assert doc["expires_at"] == exp_iso
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["expires_at"])

    # The token is the double's own: it verifies with its secret, and carries the scope answered.
    claims = pyjwt.decode(doc["token"], DOUBLE_SECRET, algorithms=["HS256"])
    assert claims["scope"] == doc["scope"]
    assert claims["exp"] - claims["iat"] == 3600
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(doc["token"], "not-the-double-secret", algorithms=["HS256"])
    assert double.served() == 1


def test_200_cache_control_no_store(broker):
    r = broker.post(body={"user_id": "alice"}, token=mint())
    assert r.status == 200, r.body
    cc = r.header("Cache-Control")
    assert cc is not None and "no-store" in cc.lower(), r.headers


def test_200_log_line_has_hash_not_token(broker):
    r = broker.post(body={"user_id": "alice"}, token=mint(sub="frontend-1"))
    assert r.status == 200, r.body
    tok = r.json()["token"]
    line = wait_token_lines(broker, 1)[-1]
    assert line["tenant"] == "default"
    assert line["user"] == "alice"
    assert line["subject"] == "frontend-1"
    assert line["decision"] == "allow"
    assert line["status"] == 200
    assert line["scope"] == "user_id:alice " + INBOX
    assert line["expires_in"] == 3600
    assert line["token_sha256"] == hashlib.sha256(tok.encode()).hexdigest()[:12]
    text = broker.p.text()
    assert tok not in text
    assert tok.split(".")[2] not in text
    assert COURIER_KEY not in text
    assert APP_SECRET not in text


def test_200_user_id_of_256_bytes_is_accepted(broker, double):
    uid = "u" * 256
    r = broker.post(body={"user_id": uid}, token=mint())
    assert r.status == 200, r.body
    assert r.json()["scope"].split(" ")[0] == "user_id:" + uid
    assert json.loads(double.last()["body"])["scope"].split(" ")[0] == "user_id:" + uid


def test_200_content_type_with_charset(broker):
    r = broker.post(body=json.dumps({"user_id": "alice"}), token=mint(),
                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status == 200, r.body


# ------------------------------------------------------------------- 400

BAD_BODIES = [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"user_id": "alice"', id="truncated-json"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b'["alice"]', id="json-array"),
    pytest.param(b'"alice"', id="json-string"),
    pytest.param({}, id="missing-user_id"),
    pytest.param({"user_id": 42}, id="user_id-number"),
    pytest.param({"user_id": None}, id="user_id-null"),
    pytest.param({"user_id": ["alice"]}, id="user_id-list"),
    pytest.param({"user_id": ""}, id="user_id-empty"),
    pytest.param({"user_id": "a" * 257}, id="user_id-257-bytes"),
    pytest.param({"user_id": "\u00e9" * 129}, id="user_id-258-bytes-utf8"),
    pytest.param({"user_id": "alice", "scopes": "inbox:read:messages"}, id="scopes-string"),
    pytest.param({"user_id": "alice", "scopes": {"a": "inbox:read:messages"}}, id="scopes-object"),
    pytest.param({"user_id": "alice", "scopes": ["inbox:read:messages", 1]}, id="scopes-non-string"),
    pytest.param({"user_id": "alice", "scopes": ["inbox read"]}, id="scopes-with-space"),
    pytest.param({"user_id": "alice", "expires_in": "3600"}, id="expires_in-unitless-string"),
    pytest.param({"user_id": "alice", "expires_in": -5}, id="expires_in-negative"),
    pytest.param({"user_id": "alice", "expires_in": 0}, id="expires_in-zero"),
    pytest.param({"user_id": "alice", "expires_in": 1.5}, id="expires_in-fraction"),
    pytest.param({"user_id": "alice", "expires_in": "abc"}, id="expires_in-abc"),
    pytest.param({"user_id": "alice", "expires_in": "-1h"}, id="expires_in-negative-string"),
    pytest.param({"user_id": "alice", "expires_in": True}, id="expires_in-bool"),
]


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory):
    """One broker (and double) for the many read-only 400/401 cases."""
    d = Double()
    b = Broker(tmp_path_factory.mktemp("shared"), d)
    yield b
    b.stop()
    d.stop()


@pytest.mark.parametrize("body", BAD_BODIES)
def test_400_invalid_request(shared_broker, body):
    d = shared_broker.double
    before = d.served()
    r = shared_broker.post(body=body, token=mint())
    expect_error(r, 400, "invalid_request")
    assert d.served() == before


def test_400_too_many_scopes(shared_broker):
    before = shared_broker.double.served()
    r = shared_broker.post(body={"user_id": "alice", "scopes": ["read:brands"] * 33}, token=mint())
    expect_error(r, 400, "invalid_request")
    assert shared_broker.double.served() == before


@pytest.mark.parametrize("expires_in,seconds", [("90m", 5400), ("2 days", 172800), (120, 120)])
def test_valid_expires_in_syntax_is_accepted(shared_broker, expires_in, seconds):
    # The policy of the shared broker ignores the request's lifetime: syntax only.
    r = shared_broker.post(body={"user_id": "alice", "expires_in": expires_in}, token=mint())
    assert r.status == 200, r.body


# ------------------------------------------------------------------- 401


def _alg_none_token():
    now = int(time.time())
    return "%s.%s." % (b64url({"alg": "none", "typ": "JWT"}),
                       b64url({"sub": "alice", "iat": now, "exp": now + 300}))


AUTH_CASES = [
    pytest.param(None, id="no-authorization"),
    pytest.param("Bearer " + "x", id="bearer-garbage-short"),
    pytest.param("Bearer garbage.garbage.garbage", id="bearer-garbage-jwt-shape"),
    pytest.param("Basic x", id="basic"),
    pytest.param("Bearer ", id="bearer-empty"),
    pytest.param("wrong-secret", id="wrong-secret"),
    pytest.param("expired", id="expired"),
    pytest.param("alg-none", id="alg-none"),
    pytest.param("alg-hs512", id="alg-not-allowed"),
    pytest.param("tampered", id="tampered-payload"),
]


def _auth_header(case):
    if case is None:
        return {}
    if case == "wrong-secret":
        return {"Authorization": "Bearer " + mint(secret="some-other-secret-of-32-bytes-or-more!")}
    if case == "expired":
        return {"Authorization": "Bearer " + mint(ttl=-3600)}
    if case == "alg-none":
        return {"Authorization": "Bearer " + _alg_none_token()}
    if case == "alg-hs512":
        return {"Authorization": "Bearer " + mint(alg="HS512")}
    if case == "tampered":
        h, p, s = mint(sub="alice").split(".")
        claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        claims["sub"] = "mallory"
        return {"Authorization": "Bearer %s.%s.%s" % (h, b64url(claims), s)}
    return {"Authorization": case}


@pytest.mark.parametrize("case", AUTH_CASES)
def test_401_unauthenticated(shared_broker, case):
    d = shared_broker.double
    before = d.served()
    r = shared_broker.post(body={"user_id": "alice"}, headers=_auth_header(case))
    expect_error(r, 401, "unauthenticated")
    assert (r.header("WWW-Authenticate") or "").startswith("Bearer"), r.headers
    assert d.served() == before


def test_401_control_the_good_token_is_accepted(shared_broker):
    # The same request with a valid credential: the 401s above are about the credential.
    r = shared_broker.post(body={"user_id": "alice"}, headers={"Authorization": "Bearer " + mint()})
    assert r.status == 200, r.body


def test_log_lines_carry_nothing_from_the_request_before(broker_factory):
    """A line has exactly the fields of its own request, whatever the request
    before it on the same loop (threads = 1) had: allowed with a policy log and
    a capped lifetime, denied, unauthenticated, malformed."""
    b = broker_factory(extra="threads = 1", policies={"default": policy("""  if req.user_id == "nobody" then return { allow = false, reason = "not you" } end
  if req.user_id == "logger" then broker.log("hello") end
  return { allow = true, tier = "inbox", expires_in = "30d", reason = "ok" }""")})
    expected = [
        (b.post(body={"user_id": "logger"}, token=mint(sub="s1")), 200),
        (b.post(body={"user_id": "nobody"}, token=mint(sub="s2")), 403),
        (b.post(body={"user_id": "alice"}, token=mint(sub="s3")), 200),
        (b.post(body={"user_id": "bob"}, token="not-a-jwt"), 401),
        (b.post(body={"user_i": "x"}, token=mint()), 400),
    ]
    for r, status in expected:
        assert r.status == status, r.body
    lines = wait_token_lines(b, len(expected))
    ok1, deny, ok2, unauth, bad = lines[-5:]
    assert ok1["policy_log"] == ["hello"] and ok1["capped"] is True and "token_sha256" in ok1
    assert deny["decision"] == "deny" and deny["reason"] == "not you" and deny["subject"] == "s2"
    for k in ("scope", "expires_in", "capped", "token_sha256", "upstream_ms", "policy_log"):
        assert k not in deny, (k, deny)
    assert "policy_log" not in ok2 and ok2["subject"] == "s3" and ok2["user"] == "alice"
    assert "error" not in ok2 and "error" not in ok1
    for k in ("subject", "decision", "scope", "token_sha256", "upstream_ms", "capped"):
        assert k not in unauth, (k, unauth)
    assert unauth["user"] == "bob" and unauth["error"] == "unauthenticated"
    assert unauth["reason"] != "ok" and "jwt" in unauth["reason"], unauth  # why it was refused
    for k in ("user", "subject", "decision", "scope", "token_sha256"):
        assert k not in bad, (k, bad)
    assert bad["status"] == 400 and bad["level"] == "info" and bad["event"] == "token_request"


def test_401_credential_never_logged(shared_broker):
    bad = mint(secret="leaked-looking-secret-value-0123456789")
    r = shared_broker.post(body={"user_id": "alice"}, token=bad)
    assert r.status == 401
    time.sleep(0.05)
    assert bad not in shared_broker.p.text()
    assert bad.split(".")[2] not in shared_broker.p.text()


# ------------------------------------------------------------------- 403


def test_403_policy_denies_with_its_reason(broker_factory, double):
    deny = policy('  return { allow = false, reason = "alice may only see her own inbox" }')
    b = broker_factory(policies={"default": deny})
    r = b.post(body={"user_id": "bob"}, token=mint(sub="alice"))
    doc = expect_error(r, 403, "forbidden")
    assert doc["message"] == "alice may only see her own inbox"
    assert double.served() == 0
    line = wait_token_lines(b, 1)[-1]
    assert line["decision"] == "deny" and line["status"] == 403


def test_403_policy_sees_identity_and_user(broker_factory, double):
    own = policy("""
  if req.identity.authenticated and req.identity.method == "jwt" and req.identity.subject == req.user_id then
    return { allow = true, tier = "inbox", reason = "own" }
  end
  return { allow = false, reason = "not yours" }""")
    b = broker_factory(policies={"default": own})
    assert b.post(body={"user_id": "alice"}, token=mint(sub="alice")).status == 200
    doc = expect_error(b.post(body={"user_id": "bob"}, token=mint(sub="alice")), 403, "forbidden")
    assert doc["message"] == "not yours"
    assert double.served() == 1


# ------------------------------------------------------------------- 404 / 405


def test_404_unknown_tenant(shared_broker):
    before = shared_broker.double.served()
    r = shared_broker.post("/v1/tenants/nope/token", body={"user_id": "alice"}, token=mint())
    expect_error(r, 404, "unknown_tenant")
    assert shared_broker.double.served() == before


@pytest.mark.parametrize("path", ["/v2/x", "/v1/tokens", "/v1/tenants/default/token/x", "/"])
def test_404_not_found(shared_broker, path):
    r = shared_broker.post(path, body={"user_id": "alice"}, token=mint())
    expect_error(r, 404, "not_found")


def test_405_get_token(shared_broker):
    r = request(shared_broker.port, "GET", "/v1/token", headers={"Authorization": "Bearer " + mint()})
    expect_error(r, 405, "method_not_allowed")
    allow = r.header("Allow")
    assert allow is not None and "POST" in [m.strip() for m in allow.split(",")], r.headers


def test_405_put_tenant_token(shared_broker):
    r = request(shared_broker.port, "PUT", "/v1/tenants/default/token", body={"user_id": "alice"},
                headers={"Authorization": "Bearer " + mint()})
    expect_error(r, 405, "method_not_allowed")
    assert "POST" in (r.header("Allow") or "")


# ------------------------------------------------------------------- 413


def _raw_exchange(port, head, body_chunks, timeout=5.0):
    """Sends a raw request; returns (status or None, raw answer bytes). A reset or
    a closed connection while sending is not an error: the broker may cut us off."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data = b""
    try:
        s.sendall(head)
        for c in body_chunks:
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(m.group(1)) if m else None), data


def _answer_json(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def test_413_content_length_over_limit(shared_broker):
    d = shared_broker.double
    before = d.served()
    pad = "x" * (MAX_BODY + 10)
    body = json.dumps({"user_id": "alice", "pad": pad}).encode()
    head = ("POST /v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (mint(), len(body))).encode()
    status, raw = _raw_exchange(shared_broker.port, head, [body])
    assert status == 413, raw[:300]
    headers, text = _answer_json(raw)
    assert json.loads(text)["error"] == "payload_too_large"
    assert d.served() == before


def test_413_content_length_header_alone(shared_broker):
    # Decided from the header: the broker need not wait for (or read) the body.
    head = ("POST /v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (mint(), 10 * 1024 * 1024)).encode()
    s = socket.create_connection(("127.0.0.1", shared_broker.port), timeout=5)
    try:
        s.sendall(head)
        data = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:200]


def test_body_just_under_limit_is_accepted(shared_broker):
    base = json.dumps({"user_id": "alice", "pad": ""}).encode()
    body = json.dumps({"user_id": "alice", "pad": "x" * (MAX_BODY - len(base))}).encode()
    assert len(body) == MAX_BODY
    r = shared_broker.post(body=body, token=mint())
    assert r.status == 200, r.body


def test_413_chunked_body_over_limit(shared_broker):
    d = shared_broker.double
    before = d.served()
    body = json.dumps({"user_id": "alice", "pad": "x" * (MAX_BODY + 4096)}).encode()
    head = ("POST /v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" % mint()).encode()
    chunks = []
    for i in range(0, len(body), 1024):
        part = body[i:i + 1024]
        chunks.append(b"%x\r\n%s\r\n" % (len(part), part))
    chunks.append(b"0\r\n\r\n")
    status, raw = _raw_exchange(shared_broker.port, head, chunks)
    # A 413 answer, or a connection cut off: never a token.
    assert status in (413, None), raw[:300]
    assert b'"token"' not in raw
    if status == 413:
        assert json.loads(_answer_json(raw)[1])["error"] == "payload_too_large"
    assert d.served() == before
    # The broker is still serving afterwards.
    assert shared_broker.post(body={"user_id": "alice"}, token=mint()).status == 200


def test_413_chunked_with_http_client(shared_broker):
    d = shared_broker.double
    before = d.served()
    body = json.dumps({"user_id": "alice", "pad": "y" * (MAX_BODY * 2)}).encode()

    def gen():
        for i in range(0, len(body), 2048):
            yield body[i:i + 2048]

    conn = http.client.HTTPConnection("127.0.0.1", shared_broker.port, timeout=5)
    status = None
    try:
        conn.request("POST", "/v1/token", body=gen(), encode_chunked=True,
                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + mint()})
        resp = conn.getresponse()
        status = resp.status
        payload = resp.read()
        assert b'"token"' not in payload
    except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
        status = None
    finally:
        conn.close()
    assert status in (413, None)
    assert d.served() == before


def test_413_chunked_body_over_limit_is_answered_413(shared_broker):
    body = json.dumps({"user_id": "alice", "pad": "x" * (MAX_BODY + 4096)}).encode()
    head = ("POST /v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" % mint()).encode()
    chunks = [b"%x\r\n%s\r\n" % (len(body[i:i + 1024]), body[i:i + 1024]) for i in range(0, len(body), 1024)]
    status, raw = _raw_exchange(shared_broker.port, head, chunks + [b"0\r\n\r\n"])
    assert status == 413, raw[:300]
    assert json.loads(_answer_json(raw)[1])["error"] == "payload_too_large"


def test_400_deeply_nested_body(shared_broker):
    d = shared_broker.double
    before = d.served()
    for raw in (b"[" * 16000, b'{"user_id": "alice", "x": ' + b"[" * 7000 + b"]" * 7000 + b"}"):
        r = shared_broker.post(body=raw, token=mint())
        expect_error(r, 400, "invalid_request")
    assert d.served() == before
    assert shared_broker.post(body={"user_id": "alice"}, token=mint()).status == 200


def test_chunked_body_under_limit_is_accepted(shared_broker):
    body = json.dumps({"user_id": "alice"}).encode()
    head = ("POST /v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" % mint()).encode()
    chunks = [b"%x\r\n%s\r\n" % (len(body[:5]), body[:5]), b"%x\r\n%s\r\n" % (len(body[5:]), body[5:]), b"0\r\n\r\n"]
    status, raw = _raw_exchange(shared_broker.port, head, chunks)
    assert status == 200, raw[:300]


# ------------------------------------------------------------------- 415


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None])
def test_415_unsupported_media_type(shared_broker, ctype):
    d = shared_broker.double
    before = d.served()
    headers = {"Authorization": "Bearer " + mint()}
    if ctype is not None:
        headers["Content-Type"] = ctype
    r = request(shared_broker.port, "POST", "/v1/token", body=json.dumps({"user_id": "alice"}), headers=headers)
    expect_error(r, 415, "unsupported_media_type")
    assert d.served() == before


# ------------------------------------------------------------------- 429


def test_429_rate_limited_with_retry_after(broker_factory, double):
    b = broker_factory(tenants={"default": {"extra": "rate_limit = { per_second = 1, burst = 2 },"}})
    codes = [b.post(body={"user_id": "alice"}, token=mint()) for _ in range(3)]
    assert [r.status for r in codes[:2]] == [200, 200], [r.body for r in codes]
    r = codes[2]
    expect_error(r, 429, "rate_limited")
    ra = r.header("Retry-After")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, r.headers
    assert double.served() == 2
    # The bucket refills: after a second the tenant may ask again.
    time.sleep(1.1)
    assert b.post(body={"user_id": "alice"}, token=mint()).status == 200


def test_429_is_per_tenant(broker_factory, double):
    pol = allow_policy()
    b = broker_factory(policies={"default": pol, "other": pol},
                       tenants={"default": {"extra": "rate_limit = { per_second = 1, burst = 1 },"}, "other": {}})
    assert b.post(body={"user_id": "alice"}, token=mint()).status == 200
    expect_error(b.post(body={"user_id": "alice"}, token=mint()), 429, "rate_limited")
    assert b.post("/v1/tenants/other/token", body={"user_id": "alice"}, token=mint()).status == 200


PER_REQUESTER = ("rate_limit = { per_second = 0.01, burst = 8, "
                 "per_requester = { per_second = 0.01, burst = 3 } },")


def test_429_per_requester_keeps_the_rest_of_the_tenant_served(broker_factory, double):
    # Issue 10, class 8: requester A floods; its refused requests spend its own
    # bucket, not the tenant's, so B (same tenant) is still served. Old code:
    # A's flood emptied the tenant's bucket and B got 429.
    b = broker_factory(tenants={"default": {"extra": PER_REQUESTER}})
    codes = [b.post(body={"user_id": "alice"}, token=mint("user-a")) for _ in range(12)]
    assert [r.status for r in codes] == [200] * 3 + [429] * 9, [r.body for r in codes]
    r = codes[-1]
    expect_error(r, 429, "rate_limited")
    ra = r.header("Retry-After")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, r.headers
    for _ in range(3):
        r = b.post(body={"user_id": "bob"}, token=mint("user-b"))
        assert r.status == 200, r.body
    assert double.served() == 6
    # The tenant's own bucket (8) still holds: C gets the last 2, then the tenant refuses.
    codes = [b.post(body={"user_id": "carol"}, token=mint("user-c")).status for _ in range(3)]
    assert codes == [200, 200, 429], codes
    text = b.get("/metrics").body.decode()
    assert 'broker_rate_limited_total{level="requester"} 9' in text, text
    assert 'broker_rate_limited_total{level="tenant"} 1' in text, text


def test_per_requester_flood_of_new_requesters_does_not_reset_a_drained_bucket(broker_factory, double):
    # More distinct requesters than the table holds (2,048 per tenant): the
    # fixed table evicts the fullest buckets, so a drained one is kept and its
    # owner cannot start over by flooding with new names. The policy denies:
    # the rate limit comes before it, and nothing calls Courier.
    b = broker_factory(policies={"default": policy('  return { allow = false, reason = "no" }')},
                       tenants={"default": {"extra": "rate_limit = { per_requester = { per_second = 0.01, burst = 3 } },"}})
    codes = [b.post(body={"user_id": "alice"}, token=mint("drained")).status for _ in range(4)]
    assert codes == [403, 403, 403, 429], codes
    seen = set()
    for i in range(2500):
        r = b.post(body={"user_id": "alice"}, token=mint("flood-%d" % i))
        seen.add(r.status)
    assert seen == {403}, seen
    expect_error(b.post(body={"user_id": "alice"}, token=mint("drained")), 429, "rate_limited")


def test_429_per_requester_by_client_ip_when_unauthenticated(broker_factory, double):
    # No subject: the requester is its address (here through a trusted proxy).
    auth = ('auth = { trusted_proxy = { header = "X-Forwarded-User", from = { "127.0.0.1/32" } }, none = true },')
    b = broker_factory(tenants={"default": {"auth": auth, "extra": PER_REQUESTER}})
    one = {"X-Forwarded-For": "203.0.113.1"}
    two = {"X-Forwarded-For": "203.0.113.2"}
    codes = [b.post(body={"user_id": "alice"}, headers=one).status for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes
    assert b.post(body={"user_id": "alice"}, headers=two).status == 200
    # An authenticated subject behind the same address has its own bucket.
    assert b.post(body={"user_id": "alice"}, headers=dict(one, **{"X-Forwarded-User": "dave"})).status == 200


def test_rate_limit_buckets_survive_a_reload(broker_factory, double):
    # Issue 10, I7: a SIGHUP used to refill every bucket.
    from conftest import reload_ok
    b = broker_factory(tenants={"default": {"extra": PER_REQUESTER}})
    codes = [b.post(body={"user_id": "alice"}, token=mint("user-a")).status for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes
    reload_ok(b)
    expect_error(b.post(body={"user_id": "alice"}, token=mint("user-a")), 429, "rate_limited")
    assert b.post(body={"user_id": "alice"}, token=mint("user-b")).status == 200


def test_config_refuses_per_requester_burst_below_one(tmp_path):
    import subprocess
    from conftest import BROKER_BIN
    (tmp_path / "p.lua").write_text("return function(req) return { allow = false } end\n")
    (tmp_path / "c.lua").write_text(
        'tenants = { default = { api_key = { env = "K" }, policy = "p.lua", auth = { none = true },\n'
        '  rate_limit = { per_requester = { per_second = 1, burst = 0.5 } } } }\n')
    r = subprocess.run([BROKER_BIN, "check", "-c", str(tmp_path / "c.lua")], env={"K": "x"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "rate_limit.per_requester.burst" in r.stderr, r.stderr


# ------------------------------------------------------------------- 500

BAD_POLICIES = {
    "raises": policy('  error("boom")'),
    "loop": policy("  while true do end"),
    "pcall_loop": policy("""
  for i = 1, 1000 do pcall(function() while true do end end) end
  return { allow = true, tier = "push" }"""),
    "membomb": policy("""
  local s = "x"
  while true do s = s .. s end"""),
    "membomb_pcall": policy("""
  local t = {}
  for i = 1, 100 do pcall(function() local s = "x" while true do s = s .. s; t[#t+1] = s end end) end
  return { allow = true, tier = "push" }"""),
    "returns_nil": policy("  return nil"),
    "returns_nothing": policy("  local x = 1"),
    "allow_yes": policy('  return { allow = "yes", tier = "inbox" }'),
    "unknown_tier": policy('  return { allow = true, tier = "admin" }'),
    "scopes_string": policy('  return { allow = true, scopes = "inbox:read:messages" }'),
    "returns_string": policy('  return "allow"'),
    "no_scopes_nor_tier": policy("  return { allow = true }"),
    "both_scopes_and_tier": policy('  return { allow = true, tier = "inbox", scopes = { "read:brands" } }'),
    "bad_expires": policy('  return { allow = true, tier = "inbox", expires_in = "3600" }'),
    "negative_expires": policy('  return { allow = true, tier = "inbox", expires_in = -1 }'),
}


@pytest.fixture(scope="module")
def bad_policy_broker(tmp_path_factory):
    d = Double()
    pols = dict(BAD_POLICIES)
    pols["default"] = allow_policy()
    b = Broker(tmp_path_factory.mktemp("badpol"), d, policies=pols)
    yield b
    b.stop()
    d.stop()


@pytest.mark.parametrize("name", sorted(BAD_POLICIES))
def test_500_policy_error(bad_policy_broker, name):
    b = bad_policy_broker
    before = b.double.served()
    t0 = time.monotonic()
    r = b.post("/v1/tenants/%s/token" % name, body={"user_id": "alice"}, token=mint())
    elapsed = time.monotonic() - t0
    doc = expect_error(r, 500, "policy_error")
    assert "boom" not in doc["message"]  # details go to the log only
    assert b.double.served() == before
    assert elapsed < 3.0, elapsed
    # The worker's engine survives a runaway policy: the next request is served.
    ok = b.post(body={"user_id": "alice"}, token=mint())
    assert ok.status == 200, ok.body


def test_500_policy_error_is_logged_with_detail(bad_policy_broker):
    b = bad_policy_broker
    n = len(token_lines(b, "raises"))
    r = b.post("/v1/tenants/raises/token", body={"user_id": "alice"}, token=mint())
    assert r.status == 500
    lines = wait_token_lines(b, n + 1, "raises")
    assert len(lines) == n + 1, b.p.text()
    assert lines[-1]["status"] == 500 and lines[-1]["decision"] == "error"
    assert lines[-1]["error"] == "policy_error"
    # The detail (file, line, message) is in the log, not in the answer.
    assert "boom" not in r.body.decode()
    assert any("boom" in l for l in b.p.text().splitlines())


# ------------------------------------------------------------------- 502


def fingerprint(key):
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.mark.parametrize("config", [
    pytest.param({"status": 500}, id="status-500"),
    pytest.param({"mode": "garbage"}, id="garbage"),
    pytest.param({"mode": "no_token"}, id="no_token"),
    pytest.param({"status": 401}, id="status-401"),
])
def test_502_upstream_error(broker, double, config):
    double.configure(**config)
    r = broker.post(body={"user_id": "alice"}, token=mint())
    doc = expect_error(r, 502, "upstream_error")
    # 5xx is retried (courier.retries = 2); an answer that is not a token, or a 401, is not.
    assert double.served() == (3 if config.get("status") == 500 else 1)
    assert COURIER_KEY not in doc["message"]
    line = wait_token_lines(broker, 1)[-1]
    assert line["status"] == 502 and line["error"] == "upstream_error"
    assert "token_sha256" not in line


def test_502_courier_401_logs_tenant_and_key_fingerprint(broker_factory, double):
    b = broker_factory(policies={"zeta-corp": allow_policy()})
    double.configure(status=401)
    r = b.post("/v1/tenants/zeta-corp/token", body={"user_id": "alice"}, token=mint())
    expect_error(r, 502, "upstream_error")
    fp = fingerprint(COURIER_KEY)
    m = b.p.wait_for(re.escape(fp), timeout=5)
    line = m.string
    assert "zeta-corp" in line, line
    assert COURIER_KEY not in b.p.text()


def test_502_wrong_api_key_logs_its_fingerprint(broker_factory, double):
    wrong = "ck_test_wrong_key_0000000000000"
    b = broker_factory(tenants={"default": {"api_key": '{ env = "WRONG_KEY" }'}}, env={"WRONG_KEY": wrong})
    r = b.post(body={"user_id": "alice"}, token=mint())
    expect_error(r, 502, "upstream_error")
    assert double.last()["authorization"] == "Bearer " + wrong
    line = b.p.wait_for(re.escape(fingerprint(wrong)), timeout=5).string
    assert "default" in line
    assert wrong not in b.p.text()
    assert fingerprint(COURIER_KEY) not in line


# ------------------------------------------------------------------- 503


def test_503_over_max_inflight(broker_factory, double):
    b = broker_factory(extra="max_inflight = 1", courier_timeout_ms=5000)
    double.configure(latency_ms=1500)
    first = {}

    def slow():
        first["r"] = b.post(body={"user_id": "alice"}, token=mint())

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    double.wait_served(1, 3)
    assert double.served() == 1
    r = b.post(body={"user_id": "bob"}, token=mint(sub="bob"))
    expect_error(r, 503, "unavailable")
    assert r.header("Retry-After") == "1", r.headers
    t.join(5)
    assert not t.is_alive()
    assert first["r"].status == 200, first["r"].body
    assert double.served() == 1
    # Once the slot is free the broker serves again.
    double.configure(latency_ms=0)
    assert b.post(body={"user_id": "bob"}, token=mint(sub="bob")).status == 200


# ------------------------------------------------------------------- 504


def test_504_upstream_timeout(broker_factory, double):
    b = broker_factory(courier_timeout_ms=300)
    double.configure(latency_ms=1500)
    t0 = time.monotonic()
    r = b.post(body={"user_id": "alice"}, token=mint())
    elapsed = time.monotonic() - t0
    expect_error(r, 504, "upstream_timeout")
    assert elapsed < 1.3, elapsed
    line = wait_token_lines(b, 1)[-1]
    assert line["status"] == 504


# ------------------------------------------------------------------- probes and metrics


def test_healthz_and_readyz(shared_broker):
    r = shared_broker.get("/healthz")
    assert r.status == 200 and r.json()["status"] == "ok"
    r = shared_broker.get("/readyz")
    assert r.status == 200


def _metric(text, name_and_labels):
    for line in text.splitlines():
        if line.startswith(name_and_labels + " "):
            return float(line.split()[-1])
    return None


def test_metrics_after_success(broker, double):
    text = broker.get("/metrics").body.decode()
    assert _metric(text, 'broker_requests_total{tenant="default",status="200"}') is None
    for _ in range(2):
        assert broker.post(body={"user_id": "alice"}, token=mint()).status == 200
    assert broker.post(body={"user_id": ""}, token=mint()).status == 400
    r = broker.get("/metrics")
    assert r.status == 200
    assert r.header("Content-Type").startswith("text/plain")
    text = r.body.decode()
    assert _metric(text, 'broker_requests_total{tenant="default",status="200"}') == 2
    assert _metric(text, 'broker_requests_total{tenant="default",status="400"}') == 1
    assert "# TYPE broker_upstream_seconds histogram" in text
    buckets = [l for l in text.splitlines() if l.startswith("broker_upstream_seconds_bucket{")]
    assert len(buckets) >= 2
    assert _metric(text, 'broker_upstream_seconds_bucket{le="+Inf"}') == 2
    assert _metric(text, "broker_upstream_seconds_count") == 2
    assert _metric(text, "broker_upstream_seconds_sum") is not None
    # Cumulative buckets never decrease.
    counts = [float(l.split()[-1]) for l in buckets]
    assert counts == sorted(counts)


def test_metrics_unknown_tenant_label(shared_broker):
    shared_broker.post("/v1/tenants/nope/token", body={"user_id": "alice"}, token=mint())
    text = shared_broker.get("/metrics").body.decode()
    v = _metric(text, 'broker_requests_total{tenant="-",status="404"}')
    assert v is not None and v >= 1, text


# ------------------------------------------------------------------- multi-tenant

ACME_KEY = "ck_test_acme_9b8a7c6d5e4f3a2b1c0d"

ACME_POLICY = policy("""
  if req.tenant ~= "acme" then return { allow = false, reason = "wrong tenant" } end
  return { allow = true, tier = "push", expires_in = "2h", reason = "acme policy" }""")


@pytest.fixture
def two_tenants(tmp_path):
    d = Double(keys=(COURIER_KEY, ACME_KEY))
    b = Broker(tmp_path, d, policies={"default": allow_policy(), "acme": ACME_POLICY},
               tenants={"default": {}, "acme": {"api_key": '{ env = "ACME_KEY" }'}},
               env={"ACME_KEY": ACME_KEY})
    yield b, d
    b.stop()
    d.stop()


def test_multi_tenant_uses_its_policy_and_key(two_tenants):
    b, d = two_tenants
    r = b.post("/v1/tenants/acme/token", body={"user_id": "alice"}, token=mint())
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["scope"] == ("user_id:alice inbox:read:messages inbox:write:events read:brands "
                            "read:preferences write:preferences read:user-tokens write:user-tokens")
    assert doc["expires_in"] == 7200
    assert d.last()["authorization"] == "Bearer " + ACME_KEY
    acme_rev = r.header("X-Policy-Revision")

    r = b.post(body={"user_id": "alice"}, token=mint())
    assert r.status == 200, r.body
    assert r.json()["scope"] == "user_id:alice " + INBOX
    assert d.last()["authorization"] == "Bearer " + COURIER_KEY
    assert r.header("X-Policy-Revision") != acme_rev

    r = b.post("/v1/tenants/default/token", body={"user_id": "alice"}, token=mint())
    assert r.status == 200 and r.json()["scope"] == "user_id:alice " + INBOX

    lines = wait_token_lines(b, 3)
    assert [l["tenant"] for l in lines[-3:]] == ["acme", "default", "default"]
    assert ACME_KEY not in b.p.text()


# ------------------------------------------- request targets and headers (issue 10 L4, L5, I2)


def _converse(port, data, timeout=5.0):
    """Sends raw bytes; reads until the broker closes or `timeout` passes.
    Returns (answers, closed): answers as (status, headers dict lower-cased,
    body) parsed by Content-Length, in order."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    raw, closed = b"", False
    deadline = time.monotonic() + timeout
    try:
        s.sendall(data)
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            raw += chunk
            if _wanted(data) <= len(_parse(raw)):
                # Every answer is in: only wait (briefly) to see whether it closes.
                deadline = min(deadline, time.monotonic() + 1.0)
    finally:
        s.close()
    return _parse(raw), closed


def _wanted(data):
    return data.count(b" HTTP/1.1\r\n")


def _parse(raw):
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        out.append((status, hdrs, rest[:n]))
        raw = rest[n:]
    return out


def _token_request(path, token, extra=b"", body=None, te=None):
    body = json.dumps({"user_id": "alice"}).encode() if body is None else body
    head = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n" + extra)
    if te:
        return head + b"Transfer-Encoding: " + te + b"\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize("method,path", [
    ("GET", "/metrics%00/../v1/token"),
    ("GET", "/healthz%00.json"),
    ("GET", "/readyz%2F"),
    ("POST", "/v1/tenants/default%2Ftoken"),
    ("POST", "/v1/tenants/default%2ftoken"),
    ("POST", "/v1/tenants/defaul%74/token"),
    ("POST", "/v1/%74oken"),
])
def test_400_percent_escapes_in_the_path_never_make_a_route(shared_broker, method, path):
    d = shared_broker.double
    before = d.served()
    if method == "POST":
        data = _token_request(path, mint())
    else:
        data = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode()
    answers, closed = _converse(shared_broker.port, data)
    assert len(answers) == 1, answers
    status, hdrs, body = answers[0]
    assert status == 400, answers
    assert json.loads(body)["error"] == "invalid_request"
    assert b"broker_" not in body and b"token" not in body
    assert d.served() == before


def test_query_strings_are_still_ignored(shared_broker):
    assert shared_broker.get("/healthz?probe=%00%2F").status == 200
    r = shared_broker.post("/v1/token?x=%2F", body={"user_id": "alice"}, token=mint())
    assert r.status == 200, r.body


@pytest.mark.parametrize("extra,te", [
    (b"Content-Length: 5\r\n", None),          # a second, different Content-Length
    (b"Content-Length: 20\r\n", None),         # the same value twice (the body is 20 bytes)
    (b"Authorization: Bearer nope\r\n", None),  # a second Authorization, the first one good
    (b"X-Evil: a\rInjected: 1\r\n", None),      # a bare CR inside a value
    (b"Content-Length: 26\r\n", b"chunked"),    # both framings
    (b"", b"gzip, chunked"),
    (b"", b"chunked, identity"),
    (b"", b"xchunked"),
    (b"Transfer-Encoding: chunked\r\n", b"chunked"),
])
def test_400_ambiguous_framing_and_headers_are_refused_at_once(shared_broker, extra, te):
    d = shared_broker.double
    before = d.served()
    t0 = time.monotonic()
    answers, closed = _converse(shared_broker.port, _token_request("/v1/token", mint(), extra, te=te), timeout=5)
    assert answers, "no answer within %.1f s" % (time.monotonic() - t0)
    status, hdrs, body = answers[0]
    assert status == 400, answers
    assert json.loads(body)["error"] == "invalid_request"
    assert hdrs.get("connection", "").lower() == "close"
    assert closed
    assert d.served() == before


def test_duplicate_authorization_is_refused_whichever_comes_first(shared_broker):
    for extra in (b"Authorization: Bearer nope\r\n", b"Authorization: Bearer " + mint().encode() + b"\r\n"):
        answers, _ = _converse(shared_broker.port, _token_request("/v1/token", mint(), extra))
        assert [a[0] for a in answers] == [400], answers


def test_probes_keep_the_connection_for_pipelined_requests(shared_broker):
    data = b"".join(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % p
                    for p in (b"/healthz", b"/readyz", b"/metrics", b"/healthz", b"/nope"))
    data += _token_request("/v1/token", mint())
    answers, closed = _converse(shared_broker.port, data, timeout=5)
    assert [a[0] for a in answers] == [200, 200, 200, 200, 404, 200], answers
    assert all(a[1].get("connection", "").lower() != "close" for a in answers), answers
    assert json.loads(answers[-1][2])["token"]
    assert not closed


def test_a_probe_with_a_body_is_answered_and_the_connection_closed(shared_broker):
    data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
    answers, closed = _converse(shared_broker.port, data + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [a[0] for a in answers] == [200], answers
    assert closed
