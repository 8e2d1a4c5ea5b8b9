"""GET /v1/client.js: the browser helper, embedded at build time, with an ETag, a cache lifetime and CORS."""
import hashlib
import os

from conftest import ROOT, request

SOURCE = os.path.join(ROOT, "src", "web", "client.js")


def test_serves_the_module_from_the_source(broker):
    r = request(broker.port, "GET", "/v1/client.js", headers={"Origin": "https://app.example.com"})
    assert r.status == 200, r.body
    with open(SOURCE, "rb") as f:
        src = f.read()
    assert r.body == src
    assert r.header("Content-Type").startswith("text/javascript")
    assert r.header("ETag") == '"sha256-%s"' % hashlib.sha256(src).hexdigest()
    assert "max-age=" in r.header("Cache-Control") and "no-store" not in r.header("Cache-Control")
    assert r.header("Access-Control-Allow-Origin") == "*"
    assert r.header("X-Content-Type-Options") == "nosniff"
    assert b"export function createTokenSession" in r.body


def test_if_none_match_revalidates(broker):
    etag = request(broker.port, "GET", "/v1/client.js").header("ETag")
    for inm in (etag, "W/" + etag, '"other", ' + etag, "*"):
        r = request(broker.port, "GET", "/v1/client.js", headers={"If-None-Match": inm})
        assert r.status == 304, inm
        assert r.body == b""
        assert r.header("ETag") == etag
        assert r.header("Access-Control-Allow-Origin") == "*"
    r = request(broker.port, "GET", "/v1/client.js", headers={"If-None-Match": '"sha256-0"'})
    assert r.status == 200 and len(r.body) > 1000


def test_head_and_other_methods(broker):
    r = request(broker.port, "HEAD", "/v1/client.js")
    assert r.status == 200 and r.body == b""
    r = request(broker.port, "POST", "/v1/client.js", b"")
    assert r.status == 405
    assert request(broker.port, "GET", "/v1/client.jsx").status == 404
