"""CORS: browsers on a tenant's listed origins may call its token route; no one else gets CORS headers."""
from conftest import mint, request

APP = "https://app.example.com"
CORS = 'cors_origins = { "https://app.example.com", "http://localhost:3000" },'


def test_preflight_from_a_listed_origin(broker_factory):
    b = broker_factory(tenants={"default": {"extra": CORS}})
    r = request(b.port, "OPTIONS", "/v1/token", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status == 204
    assert r.header("Access-Control-Allow-Origin") == APP
    assert r.header("Access-Control-Allow-Methods") == "POST"
    assert "Authorization" in r.header("Access-Control-Allow-Headers")
    assert "Content-Type" in r.header("Access-Control-Allow-Headers")
    assert r.header("Vary") == "Origin"
    assert b.double.served() == 0


def test_preflight_from_another_origin_is_refused(broker_factory):
    b = broker_factory(tenants={"default": {"extra": CORS}})
    for origin in ("https://evil.example.com", "https://app.example.com.evil.com", "null"):
        r = request(b.port, "OPTIONS", "/v1/token", headers={"Origin": origin,
                                                              "Access-Control-Request-Method": "POST"})
        assert r.status == 403
        assert r.header("Access-Control-Allow-Origin") is None


def test_token_and_error_answers_carry_the_origin(broker_factory):
    b = broker_factory(tenants={"default": {"extra": CORS}})
    ok = b.post(body={"user_id": "alice"}, token=mint(), headers={"Origin": APP})
    assert ok.status == 200
    assert ok.header("Access-Control-Allow-Origin") == APP
    bad = b.post(body={"user_id": "alice"}, token="garbage", headers={"Origin": APP})
    assert bad.status == 401
    assert bad.header("Access-Control-Allow-Origin") == APP
    other = b.post(body={"user_id": "alice"}, token=mint(), headers={"Origin": "https://evil.example.com"})
    assert other.status == 200  # a server-side caller is not a browser: the policy decides
    assert other.header("Access-Control-Allow-Origin") is None


def test_no_cors_unless_configured(broker):
    r = request(broker.port, "OPTIONS", "/v1/token", headers={"Origin": APP,
                                                               "Access-Control-Request-Method": "POST"})
    assert r.status == 403
    ok = broker.post(body={"user_id": "alice"}, token=mint(), headers={"Origin": APP})
    assert ok.status == 200 and ok.header("Access-Control-Allow-Origin") is None


def test_wildcard_origin_is_refused_by_check(tmp_path, double):
    import subprocess
    from conftest import BROKER_BIN, APP_SECRET, COURIER_KEY
    import os
    (tmp_path / "p.lua").write_text("return function(req) return {allow=false} end\n")
    (tmp_path / "c.lua").write_text("""tenants = { default = { api_key = { env = "K" }, policy = "p.lua",
  auth = { none = true }, cors_origins = { "*" } } }
""")
    env = dict(os.environ, K=COURIER_KEY, APP_JWT_SECRET=APP_SECRET)
    p = subprocess.run([BROKER_BIN, "check", "-c", str(tmp_path / "c.lua")], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "cors_origins" in p.stderr and "refused" in p.stderr


def _names(value):
    return {v.strip().lower() for v in (value or "").split(",") if v.strip()}


def test_preflight_allows_tracing_headers(broker_factory):
    """OpenTelemetry, W3C baggage and Sentry add these to every fetch: a
    preflight that refuses them fails the token request in the browser."""
    b = broker_factory(tenants={"default": {"extra": CORS}})
    asked = "authorization, content-type, traceparent, tracestate, baggage, sentry-trace, x-request-id"
    r = request(b.port, "OPTIONS", "/v1/token", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asked})
    assert r.status == 204
    assert _names(asked) <= _names(r.header("Access-Control-Allow-Headers")), r.header("Access-Control-Allow-Headers")


def test_page_code_can_read_retry_after_request_id_and_revision(broker_factory):
    b = broker_factory(tenants={"default": {"extra": CORS + " rate_limit = { per_second = 0.01, burst = 1 },"}})
    ok = b.post(body={"user_id": "alice"}, token=mint(), headers={"Origin": APP})
    assert ok.status == 200
    want = {"retry-after", "x-request-id", "x-policy-revision"}
    assert want <= _names(ok.header("Access-Control-Expose-Headers"))
    limited = b.post(body={"user_id": "alice"}, token=mint(), headers={"Origin": APP})
    assert limited.status == 429 and limited.header("Retry-After")
    assert limited.header("Access-Control-Allow-Origin") == APP
    assert want <= _names(limited.header("Access-Control-Expose-Headers"))
    # Not for origins that are not listed.
    other = b.post(body={"user_id": "bob"}, token=mint("bob"), headers={"Origin": "https://evil.example.com"})
    assert other.header("Access-Control-Expose-Headers") is None
