"""`teachloop doctor`: one ok/warn/fail line per check; the endpoint check against a real
loopback HTTP server and a closed port."""

from __future__ import annotations

import http.server
import re
import socket
import threading

from typer.testing import CliRunner

from teachloop import doctor
from teachloop.cli import app

LINE = re.compile(r"^(ok|warn|fail)\s+(sandbox|embedded model|endpoint|chromium|libraries)\s+\S")


class _Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b'{"object": "list", "data": []}' if self.path == "/v1/models" else b"{}"
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_endpoint_reachable_and_unreachable(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
        c = doctor.check_endpoint()
        assert c.level == "ok" and "answered 200" in c.detail, c
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    c = doctor.check_endpoint(timeout_s=1.0)
    assert c.level == "fail" and "unreachable" in c.detail, c


def test_cli_prints_one_line_per_check(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = CliRunner().invoke(app, ["doctor"])
    lines = result.output.strip().splitlines()
    assert len(lines) == len(doctor.CHECKS), result.output
    assert all(LINE.match(line) for line in lines), result.output
    failed = any(line.startswith("fail") for line in lines)
    assert result.exit_code == (1 if failed else 0), result.output
    sandbox_line = next(line for line in lines if " sandbox " in f" {line} ")
    from teachloop.evals.sandbox import isolation
    assert sandbox_line.startswith("ok") == isolation()["isolated"], sandbox_line
