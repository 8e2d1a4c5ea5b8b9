"""`make demo` runs scripts/demo.sh: it must issue a token end to end and exit 0."""
import os
import subprocess

from conftest import BROKER_BIN, DOUBLE_BIN, ROOT


def test_demo_script_issues_a_token():
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh"), BROKER_BIN, DOUBLE_BIN],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "HTTP 200" in p.stdout
    assert '"scope": "user_id:alice inbox:read:messages' in p.stdout
    # The log line shows the token only as a hash, never the token itself.
    token = [l for l in p.stdout.splitlines() if '"token": "' in l][0].split('"')[3]
    log = [l for l in p.stdout.splitlines() if '"event":"token_request"' in l]
    assert log and token not in log[0] and '"token_sha256"' in log[0]
