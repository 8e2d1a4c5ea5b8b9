"""HTTPS on the broker's own listener: `tls = { cert = ..., key = { file = ... } }`.

A throw-away CA signs the broker's certificates (python's cryptography);
clients verify them with python's ssl module against that CA. The probes and
/metrics stay plain HTTP on admin_listen, which these tests read the reload
counters from.
"""
import datetime
import http.client
import os
import socket
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import (BROKER_BIN, Response, mint, reload_failed, reload_ok, request)

TLS_EXTRA = """admin_listen = "127.0.0.1:0"
tls = { cert = "broker.crt", key = { file = "broker.key" } }
"""


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Pki:
    """A CA and the leaf certificates it signs (EC P-256, for 127.0.0.1)."""

    def __init__(self, d):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cafile = str(d / "ca.crt")
        with open(self.cafile, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))

    def leaf(self, cn):
        """(certificate PEM, key PEM) for cn, valid for 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress")
                                                                           .ip_address("127.0.0.1"))]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def context(self, **kw):
        ctx = ssl.create_default_context(cafile=self.cafile)
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx


def write_pair(d, cert, key, mode=0o600):
    """Writes the pair the config names, each file replaced whole."""
    for name, data, m in (("broker.crt", cert, 0o644), ("broker.key", key, mode)):
        tmp = d / (name + ".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, m)
        os.replace(tmp, d / name)


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def tls_broker(brokers, double, pki, cn="broker-one", **kw):
    """A broker serving HTTPS with a certificate for cn; b.get reads the admin listener."""
    cert, key = pki.leaf(cn)
    b = brokers("tls-" + cn, double, prepare=lambda d: write_pair(d, cert, key), extra=TLS_EXTRA, **kw)
    admin = int(b.p.wait_for(r"admin listener on 127\.0\.0\.1:(\d+)").group(1))
    b.get = lambda path: request(admin, "GET", path)
    return b


def https(b, pki, method="GET", path="/healthz", body=None, headers=None, conn=None):
    """One request over HTTPS (on conn, kept open, when given)."""
    own = conn is None
    if own:
        conn = http.client.HTTPSConnection("127.0.0.1", b.port, timeout=5, context=pki.context())
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        if own:
            conn.close()


def peer_cn(b, pki):
    """The common name of the certificate a new connection gets."""
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as raw:
        with pki.context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            return subject["commonName"]


def handshake(b, ctx):
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.version(), s.cipher()[0]


def test_token_over_https_verified_with_the_test_ca(brokers, double, pki):
    b = tls_broker(brokers, double, pki)
    r = https(b, pki, "POST", "/v1/token", body=b'{"user_id": "alice"}',
              headers={"Content-Type": "application/json", "Authorization": "Bearer " + mint("alice")})
    assert r.status == 200, r.body
    assert r.json()["token"]
    assert peer_cn(b, pki) == "broker-one"
    # The probes stay plain HTTP on admin_listen.
    assert b.get("/readyz").status == 200
    assert "PRIVATE KEY" not in b.p.text()


def test_tls12_and_tls13_with_aead_ciphers_only(brokers, double, pki):
    b = tls_broker(brokers, double, pki)
    v12 = handshake(b, pki.context(minimum_version=ssl.TLSVersion.TLSv1_2,
                                   maximum_version=ssl.TLSVersion.TLSv1_2))
    assert v12[0] == "TLSv1.2" and ("GCM" in v12[1] or "CHACHA20" in v12[1]), v12
    v13 = handshake(b, pki.context(minimum_version=ssl.TLSVersion.TLSv1_3))
    assert v13[0] == "TLSv1.3", v13
    # A CBC suite (no AEAD) is refused even on TLS 1.2.
    ctx = pki.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(b, ctx)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls11_refused(brokers, double, pki):
    b = tls_broker(brokers, double, pki)
    ctx = pki.context()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that the client really offers TLS 1.1
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(b, ctx)
    assert https(b, pki).status == 200  # and the listener still serves


def test_plain_http_to_the_tls_port_fails(brokers, double, pki):
    b = tls_broker(brokers, double, pki)
    with pytest.raises((http.client.HTTPException, OSError)):
        r = request(b.port, "GET", "/healthz", timeout=5)
        # No HTTP answer may come back in clear.
        assert r.status not in (200, 404), r.body
        raise OSError("unexpected answer %r" % r.status)
    assert https(b, pki).status == 200


def check(cfg_dir):
    return subprocess.run([BROKER_BIN, "check", "-c", str(cfg_dir / "broker.conf.lua")],
                          env={"PATH": os.environ.get("PATH", ""), "COURIER_API_KEY": "ck_x",
                               "APP_JWT_SECRET": "s" * 40},
                          capture_output=True, text=True, timeout=30)


def test_check_refuses_a_mismatched_pair_and_an_open_key(brokers, double, pki):
    b = tls_broker(brokers, double, pki)
    cert, _ = pki.leaf("broker-one")
    _, other_key = pki.leaf("someone-else")
    assert check(b.dir).returncode == 0
    write_pair(b.dir, cert, other_key)
    r = check(b.dir)
    assert r.returncode != 0
    assert "tls" in r.stderr and "does not match the certificate" in r.stderr, r.stderr
    assert "PRIVATE KEY" not in r.stderr + r.stdout
    # A key file others may read is refused like every secret.
    _, key = pki.leaf("broker-one")
    write_pair(b.dir, cert, key, mode=0o644)
    r = check(b.dir)
    assert r.returncode != 0 and "tls.key" in r.stderr, r.stderr


def test_sighup_rotates_the_certificate_for_new_connections(brokers, double, pki):
    b = tls_broker(brokers, double, pki)
    kept = http.client.HTTPSConnection("127.0.0.1", b.port, timeout=5, context=pki.context())
    assert https(b, pki, conn=kept).status == 200
    assert peer_cn(b, pki) == "broker-one"

    write_pair(b.dir, *pki.leaf("broker-two"))
    reload_ok(b)
    assert peer_cn(b, pki) == "broker-two"
    # A connection that began with the old certificate keeps working.
    assert https(b, pki, conn=kept).status == 200
    kept.close()
    assert "PRIVATE KEY" not in b.p.text()


def test_a_bad_pair_refuses_the_reload_and_the_old_one_keeps_serving(brokers, double, pki):
    b = tls_broker(brokers, double, pki)
    cert, _ = pki.leaf("broker-two")
    _, other_key = pki.leaf("broker-three")
    write_pair(b.dir, cert, other_key)
    reload_failed(b)
    b.p.wait_for(r"reload refused: .*tls.*does not match the certificate")
    assert peer_cn(b, pki) == "broker-one"
    assert https(b, pki).status == 200
    # Garbage where the certificate should be: refused too.
    (b.dir / "broker.crt").write_text("not a certificate\n")
    reload_failed(b)
    assert peer_cn(b, pki) == "broker-one"
