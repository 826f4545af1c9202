"""Several OpenAI-compatible endpoints per role (agents/endpoints.py), over real HTTP on
127.0.0.1: ``RecordingServer`` (a small real server answering as told) for the routing rules,
llama.cpp's server (the embedded GGUF) for the runs whose servers are killed.

    pytest tests/test_endpoints.py              # the fast part (seconds)
    pytest tests/test_endpoints.py -m full      # + two llama.cpp servers killed mid-run
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from teachloop.agents.backends import (
    BackendRequestFailed,
    BackendUnavailable,
    EndpointsDown,
    OpenAIBackend,
    OpenAIBackendConfig,
)
from teachloop.agents.build import backend_for
from teachloop.agents.config import ModelSection
from teachloop.config import load_config

try:
    from server_utils import RecordingServer, free_port, llama_cpp_server_available, start_llama_cpp_server
except ImportError:  # tests/ became a package
    from tests.server_utils import RecordingServer, free_port, llama_cpp_server_available, start_llama_cpp_server

ASK = [{"role": "user", "content": "What is 2 + 3?"}]


def backend(*urls: str, **kw) -> OpenAIBackend:
    kw.setdefault("model", "recording")  # no start-up check unless a test asks for one
    kw.setdefault("max_retries", 0)
    return OpenAIBackend(OpenAIBackendConfig(base_url=list(urls), **kw))


def stats(b: OpenAIBackend) -> dict[str, dict]:
    return {s["url"]: s for s in b.endpoint_stats()}


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


# ------------------------------------------------------------------ configuration


def test_base_url_takes_one_string_or_a_list(monkeypatch):
    one = OpenAIBackendConfig(base_url="http://127.0.0.1:8000")
    assert one.base_url == "http://127.0.0.1:8000/v1" and one.base_urls == ["http://127.0.0.1:8000/v1"]
    two = OpenAIBackendConfig(base_url=["http://a:1", "http://b:2/v1", "http://a:1/v1"])
    assert two.base_urls == ["http://a:1/v1", "http://b:2/v1"]  # normalised, duplicates dropped
    monkeypatch.setenv("TEACHLOOP_OPENAI_BASE_URL", "http://a:1, http://b:2")
    assert OpenAIBackendConfig().base_urls == ["http://a:1/v1", "http://b:2/v1"]
    cfg = load_config("smoke", None, ["teacher.model.base_url=[http://a:1/v1,http://b:2/v1]",
                                      "student.base_url=http://a:1/v1,http://b:2/v1",
                                      "student.backend=openai", "teacher.model.backend=openai"])
    assert cfg.teacher.model.base_url == cfg.student.base_url == ["http://a:1/v1", "http://b:2/v1"]
    assert load_config("smoke", None, ["student.base_url=http://a:1/v1"]).student.base_url == "http://a:1/v1"
    b = backend_for(ModelSection(backend="openai", base_url=["http://a:1/v1", "http://b:2/v1"]), role="student")
    assert [s["url"] for s in b.endpoint_stats()] == ["http://a:1/v1", "http://b:2/v1"]
    assert b.pool.role == "student"


def test_endpoint_preset_loads():
    cfg = load_config("endpoint")
    assert cfg.probe.attempts == 32  # M = 32 (Sancaktar et al., METHODS.md §1)
    assert cfg.teacher.protocol in ("single", "structured")
    assert cfg.teacher.model.backend == "openai" and cfg.teacher.model.max_tokens >= 4000


# ------------------------------------------------------------------ routing


def test_requests_go_to_the_least_loaded_endpoint():
    """8 concurrent slow requests over two endpoints: 4 each (fewest in flight first)."""
    def slow(body):
        time.sleep(0.3)
        return 200, "5"

    with RecordingServer(slow) as a, RecordingServer(slow) as b:
        be = backend(a.base_url, b.base_url, max_concurrency=8)
        out = be.generate([ASK] * 8, max_tokens=4)
        assert [c[0].text for c in out] == ["5"] * 8
        assert (len(a.bodies), len(b.bodies)) == (4, 4)
        s = stats(be)
        assert [s[u]["requests"] for u in (a.base_url, b.base_url)] == [4, 4]
        assert all(x["in_flight"] == 0 and x["failed"] == 0 for x in s.values())


def test_a_failing_endpoint_is_marked_down_and_its_request_retried_on_another():
    with RecordingServer(lambda body: (500, "boom")) as bad, RecordingServer(lambda body: (200, "5")) as good:
        be = backend(bad.base_url, good.base_url, max_retries=1, cooldown_s=60)
        for _ in range(4):  # one at a time: the first goes to the first endpoint (a tie)
            assert be.generate([ASK], max_tokens=4)[0][0].text == "5"
        s = stats(be)
        assert len(bad.bodies) == 2  # the first request, retried once by the SDK, then never again
        assert s[bad.base_url]["failed"] == 1
        assert s[bad.base_url]["downs"] == 1 and not s[bad.base_url]["healthy"]
        assert s[good.base_url]["requests"] == 4 and s[good.base_url]["rerouted_in"] == 1
        assert "500" in s[bad.base_url]["last_error"]
        assert any("retried here after failing elsewhere" in ln for ln in be.endpoint_summary())


def test_a_down_endpoint_is_probed_after_its_cool_down_and_taken_back():
    broken = threading.Event()
    broken.set()

    def flaky(body):
        return (503, "restarting") if broken.is_set() else (200, "A")

    with RecordingServer(flaky) as a, RecordingServer(lambda body: (200, "B")) as b:
        be = backend(a.base_url, b.base_url, cooldown_s=0.3)
        assert be.generate([ASK], max_tokens=4)[0][0].text == "B"  # failed on A, retried on B
        assert not stats(be)[a.base_url]["healthy"]
        broken.clear()  # A is back
        assert be.generate([ASK], max_tokens=4)[0][0].text == "B"  # within A's cool-down: B only
        time.sleep(0.5)
        be.generate([ASK], max_tokens=4)  # picks B, and starts A's probe in the background
        time.sleep(0.3)
        texts = {c[0].text for c in be.generate([ASK] * 4, max_tokens=4)}
        s = stats(be)[a.base_url]
        assert s["healthy"] and s["probes"] >= 1 and s["ok"] >= 1 and "A" in texts
        assert s["downs"] == 1


def test_a_dead_endpoint_stays_down_and_its_cool_down_doubles():
    with RecordingServer(lambda body: (200, "5")) as good:
        dead = dead_url()
        be = backend(dead, good.base_url, cooldown_s=0.2)
        be.generate([ASK], max_tokens=4)
        ep = be.pool.endpoints[0]
        assert not ep.healthy and ep.cooldown == pytest.approx(0.4)
        for _ in range(3):
            time.sleep(ep.next_probe - time.monotonic() + 0.05)
            be.generate([ASK], max_tokens=4)  # starts a probe, refused
            time.sleep(0.1)
        assert not ep.healthy and ep.stats.probes >= 2 and ep.cooldown >= 1.6
        assert stats(be)[good.base_url]["ok"] == 4


def test_all_endpoints_down_raises_endpoints_down_in_one_line():
    urls = [dead_url(), dead_url()]
    be = backend(*urls, max_retries=1, role="teacher")
    t0 = time.perf_counter()
    with pytest.raises(EndpointsDown) as err:
        be.generate([ASK] * 3, max_tokens=4)
    msg = str(err.value)
    print(f"\nall down in {time.perf_counter() - t0:.2f} s: {msg}")
    assert "all 2 teacher endpoints are down" in msg and "--resume" in msg and "\n" not in msg
    assert all(u in msg for u in urls)
    assert not isinstance(err.value, BackendRequestFailed)  # the loop must not record it as a rejection
    assert time.perf_counter() - t0 < 10


def test_a_request_that_fails_on_every_live_endpoint_is_a_request_failure_not_a_stop():
    """Both endpoints answer /models (alive) but fail this request: BackendRequestFailed (a
    recorded rejection, the run goes on); a 4xx fails at once and marks nothing down."""
    with RecordingServer(lambda body: (500, "x")) as a, RecordingServer(lambda body: (500, "y")) as b:
        be = backend(a.base_url, b.base_url)
        with pytest.raises(BackendRequestFailed, match="failed after 1 attempts"):
            be.generate([ASK], max_tokens=4)
        assert all(s["healthy"] for s in be.endpoint_stats())  # the probes found them alive
        assert len(a.bodies) + len(b.bodies) == 2  # once on each
    with RecordingServer(lambda body: (400, "bad request")) as a, RecordingServer(lambda body: (200, "5")) as b:
        be = backend(a.base_url, b.base_url)
        with pytest.raises(BackendRequestFailed, match="HTTP 400"):
            be.generate([ASK], max_tokens=4)
        assert len(b.bodies) == 0 and all(s["healthy"] and s["downs"] == 0 for s in be.endpoint_stats())


def test_start_up_check_goes_on_without_a_dead_endpoint_and_fails_when_all_are_dead():
    with RecordingServer(lambda body: (200, "5")) as good:
        dead = dead_url()
        be = backend(dead, good.base_url, model=None)
        be.check()  # one answers: a warning, the dead one is down
        assert be.model == "recording"
        s = stats(be)
        assert not s[dead]["healthy"] and s[good.base_url]["healthy"]
        assert be.generate([ASK], max_tokens=4)[0][0].text == "5"
        assert len(good.bodies) == 1 and s[dead]["requests"] == 0
    be = backend(dead_url(), dead_url(), model=None)
    with pytest.raises(BackendUnavailable, match="none of the 2 endpoints answers") as err:
        be.check()
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ llama.cpp servers killed mid-run

EXE = shutil.which("teachloop", path=str(Path(sys.executable).parent)) or "teachloop"
ENDPOINT_LINE = re.compile(r"endpoint (\w+) (\S+): (\d+) requests, (\d+) ok, (\d+) failed, "
                           r"(\d+) retried here")


def _generate_args(out: Path, urls: list[str], per_family: int) -> list[str]:
    u = "[" + ",".join(urls) + "]"
    return ["generate", "--preset", "smoke", "--out", str(out),
            "--set", f"seeds.per_family={per_family}", "--set", "teacher.kind=llm",
            "--set", "teacher.model.backend=openai", "--set", f"teacher.model.base_url={u}",
            "--set", "teacher.model.tokenizer=embedded", "--set", "student.backend=openai",
            "--set", f"student.base_url={u}", "--set", "student.max_retries=2",
            "--set", "teacher.model.max_retries=2"]


def _start_generate(args: list[str]) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    proc = subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    return proc, lines, reader


def _wait_for(lines: list[str], needle: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not any(needle in ln for ln in lines):
        assert proc.poll() is None, f"generate ended early: {''.join(lines)}{proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {needle!r} in {timeout} s"
        time.sleep(0.1)


def _endpoint_rows(stdout: str) -> dict[tuple[str, str], dict[str, int]]:
    return {(m[1], m[2]): {"requests": int(m[3]), "ok": int(m[4]), "failed": int(m[5]), "rerouted_in": int(m[6])}
            for m in ENDPOINT_LINE.finditer(stdout)}


@pytest.fixture
def two_servers(tmp_path):
    if not llama_cpp_server_available():
        pytest.skip("llama-cpp-python[server] not installed (pip install 'llama-cpp-python[server]')")
    from teachloop.agents.embedded import embedded_gguf_path

    servers = [start_llama_cpp_server(embedded_gguf_path(), tmp_path / "srv", n_threads=1) for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


@pytest.mark.full
def test_generate_finishes_on_the_other_endpoint_when_one_is_killed(two_servers, tmp_path):
    a, b = two_servers
    out = tmp_path / "run"
    proc, lines, reader = _start_generate(_generate_args(out, [a.base_url, b.base_url], per_family=4))
    try:
        _wait_for(lines, "generate run", proc)
        time.sleep(3.0)  # the seeds' probes are in flight on both servers
        a.kill()
        t_kill = time.monotonic()
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    stdout, stderr = "".join(lines), proc.stderr.read()
    print(f"\nfinished {time.monotonic() - t_kill:.1f} s after the kill\n{stdout[-2500:]}")
    assert rc == 0, stderr
    rows = _endpoint_rows(stdout)
    failed_on_a = sum(r["failed"] for (role, url), r in rows.items() if url == a.base_url)
    retried_on_b = sum(r["rerouted_in"] for (role, url), r in rows.items() if url == b.base_url)
    print(f"failed on the killed endpoint: {failed_on_a}; retried on the other: {retried_on_b}")
    assert failed_on_a >= 1 and retried_on_b == failed_on_a  # every failed request was retried there
    assert "backend" not in stdout.split("rejection reasons")[-1].split("why chains stopped")[0]
    assert re.search(r"proposals (\d+) = accepted \d+ \+ rejected \d+; pool: .* ok", stdout)


@pytest.mark.full
def test_generate_stops_in_one_line_when_all_endpoints_die_and_resumes(two_servers, tmp_path):
    a, b = two_servers
    out = tmp_path / "run"
    args = _generate_args(out, [a.base_url, b.base_url], per_family=2)
    proc, lines, reader = _start_generate(args)
    try:
        _wait_for(lines, "generate run", proc)
        time.sleep(3.0)
        a.kill()
        b.kill()
        t_kill = time.monotonic()
        rc = proc.wait(timeout=120)
        stopped_s = time.monotonic() - t_kill
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    stderr = proc.stderr.read()
    print(f"\nstopped {stopped_s:.1f} s after both kills, rc {rc}: {stderr.strip()}")
    assert rc == 2, stderr
    assert "Traceback" not in stderr + "".join(lines)
    err_lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and "endpoints are down" in err_lines[0] and "--resume" in err_lines[0]
    # the servers come back on the same ports; --resume finishes the run
    from teachloop.agents.embedded import embedded_gguf_path

    two_servers[:] = [start_llama_cpp_server(embedded_gguf_path(), tmp_path / "srv2", n_threads=1, port=s.port)
                      for s in (a, b)]
    r = subprocess.run([EXE, *args, "--resume"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, COLUMNS="200", NO_COLOR="1"))
    print(r.stdout[-2000:])
    assert r.returncode == 0, r.stderr
    assert re.search(r"proposals (\d+) = accepted \d+ \+ rejected \d+; pool: .* ok", r.stdout)
    assert "(resumed)" in r.stdout
