"""Why a decision was made, and what a change would do (issue 15): the
revision on every decided answer, `replay` of audit-log lines, `eval` of a
raw request, and `--explain`."""
import json
import os
import subprocess

from conftest import APP_SECRET, BROKER_BIN, COURIER_KEY, Broker, mint, policy

TIMEOUT = 60

DECIDE = policy('if req.user_id == "mallory" then return { allow = false, reason = "blocked user" } end\n'
                'if req.user_id == "oops" then error("boom") end\n'
                'return { allow = true, tier = "inbox", expires_in = "1h", reason = "ok" }')


def run(args, env=None, cwd=None, input=None):
    e = dict(os.environ)
    e.pop("COURIER_BASE_URL", None)
    e.update({"COURIER_API_KEY": COURIER_KEY, "APP_JWT_SECRET": APP_SECRET})
    e.update(env or {})
    p = subprocess.run([BROKER_BIN] + [str(a) for a in args], env=e, cwd=cwd, input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    p.out = p.stdout.decode("utf-8", "replace")
    p.err = p.stderr.decode("utf-8", "replace")
    return p


# ------------------------------------------------- X-Policy-Revision


def test_every_decided_answer_names_the_revision(tmp_path, double):
    b = Broker(tmp_path, double, policies={"default": DECIDE},
               tenants={"default": {"extra": 'cors_origins = { "https://app.example" },'}})
    try:
        ok = b.post(body={"user_id": "alice"}, token=mint())
        rev = ok.header("X-Policy-Revision")
        assert ok.status == 200 and rev
        denied = b.post(body={"user_id": "mallory"}, token=mint(), headers={"Origin": "https://app.example"})
        assert denied.status == 403, denied.body
        assert denied.header("X-Policy-Revision") == rev, denied.headers
        assert "x-policy-revision" in denied.header("Access-Control-Expose-Headers").lower()
        failed = b.post(body={"user_id": "oops"}, token=mint())
        assert failed.status == 500 and failed.header("X-Policy-Revision") == rev, failed.headers
        # Not decided: no revision to name.
        unauth = b.post(body={"user_id": "alice"})
        assert unauth.status == 401 and unauth.header("X-Policy-Revision") is None
    finally:
        b.stop()
