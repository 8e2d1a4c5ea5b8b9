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
