"""Log lines are valid UTF-8 whatever bytes reach them (issue 10, L2).

The broker's stderr is read as raw bytes here: the suite's usual reader
decodes with "replace", which would hide a broken line.
"""
import json
import time

import conftest
from conftest import Broker, mint, policy, wait_token_lines


class RawProcess(conftest.Process):
    """A Process that also keeps every stderr/stdout line as bytes."""

    def __init__(self, argv, env, stdout_port=False):
        self.raw = []
        super().__init__(argv, env, stdout_port)

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            with self._cond:
                self.raw.append(raw)
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()


LOGGING_POLICY = policy("""
  broker.log("raw", "\\255\\254", "caf\\195\\169", "cut\\195")
  broker.log("header", req.headers["x-raw"] or "-")
  return { allow = false, reason = "no" }""")


def test_every_log_line_is_valid_utf8(tmp_path, double, monkeypatch):
    monkeypatch.setattr(conftest, "Process", RawProcess)
    b = Broker(tmp_path, double, policies={"default": LOGGING_POLICY})
    try:
        r = b.post(body={"user_id": "alice"}, token=mint(), headers={"X-Raw": "h\xffh"})
        assert r.status == 403, r.body
        wait_token_lines(b, 1)
        # A 401 whose log carries the method and reason, and a request log line.
        assert b.post(body={"user_id": "alice"}, token="x.y.z").status == 401
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(wait_token_lines(b, 1)) < 2:
            time.sleep(0.05)
    finally:
        b.stop()
    raw = list(b.p.raw)
    assert raw
    for line in raw:
        text = line.decode("utf-8")  # strict: raises on a broken line
        if text.startswith("{"):
            json.loads(text)
    logged = [json.loads(l) for l in raw if b'"raw' in l]
    assert logged, raw
    text = json.dumps(logged, ensure_ascii=False)
    assert "\ufffd\ufffd" in text and "caf\u00e9" in text and "cut\ufffd" in text, text
    assert "h\ufffdh" in text, text
