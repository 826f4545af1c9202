"""Throughput of the chat backends on the embedded SmolLM2-135M (CPU).

Run: ``python benchmarks/bench_backends.py [--repeats 3] [--max-tokens 64] [--skip-server]``

Measures, with the same prompts and a fixed number of generated tokens per completion
(end-of-sequence suppressed: ``ignore_eos`` locally, a logit bias on the server):
  * local backend (transformers): tokens/s at batch 1 vs batch 8 (one generate call);
  * OpenAI-compatible backend against a real llama-cpp-python server on 127.0.0.1:
    tokens/s at concurrency 1 vs 8 (8 requests);
and prints medians over ``--repeats`` runs and the batch-8 / batch-1 ratios, plus the
embedded model's preparation and load times and the server's start time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from teachloop.agents.backends import LocalBackend, LocalBackendConfig, OpenAIBackend, OpenAIBackendConfig  # noqa: E402
from teachloop.agents.embedded import conversion_info, embedded_gguf_path, embedded_model_path  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": text}]
    for text in (
        "Explain why the sky is blue.",
        "Write a short poem about rivers.",
        "What is the capital of France and why is it famous?",
        "Describe how a bicycle works.",
        "List three uses of a paperclip.",
        "Tell me a story about a robot.",
        "How do plants make food?",
        "Why do we need sleep?",
    )
]
# SmolLM2's end tokens (<|endoftext|>=0, <|im_end|>=2): llama.cpp's server has no ignore_eos.
NO_EOS = {"logit_bias": {"0": -100, "2": -100}}


def tokens_per_s(backend, convs, max_tokens: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = backend.generate(convs, n=1, max_tokens=max_tokens, temperature=1.0, ignore_eos=True)
    seconds = time.perf_counter() - t0
    tokens = sum(c.completion_tokens for cs in out for c in cs)
    return tokens / seconds, tokens


def median_run(label: str, fn, repeats: int) -> float:
    rates, counts = [], []
    for _ in range(repeats):
        rate, tokens = fn()
        rates.append(rate)
        counts.append(tokens)
    med = statistics.median(rates)
    print(f"  {label:<28} {med:8.1f} tok/s  (runs: {', '.join(f'{r:.1f}' for r in rates)}; tokens {counts})")
    return med


def bench_local(repeats: int, max_tokens: int) -> dict:
    print("local backend (transformers, CPU, float32)")
    t0 = time.perf_counter()
    path = embedded_model_path()
    prep = time.perf_counter() - t0
    converted = conversion_info(path)["seconds"]
    print(f"  embedded checkpoint ready in {prep:.2f} s (conversion, when it ran: {converted} s)")
    backend = LocalBackend(LocalBackendConfig(model=str(path), device="cpu", max_batch_size=8))
    backend.load()
    print(f"  model + tokenizer load: {backend.load_seconds:.2f} s")
    backend.generate(PROMPTS[:1], max_tokens=4)  # warm-up
    it = iter(range(10**9))
    b1 = median_run("batch 1", lambda: tokens_per_s(backend, [PROMPTS[next(it) % 8]], max_tokens), repeats)
    b8 = median_run("batch 8 (one generate call)", lambda b=backend: tokens_per_s(b, PROMPTS, max_tokens), repeats)
    print(f"  ratio batch 8 / batch 1: {b8 / b1:.2f}x")
    backend.close()
    return {"local_b1": b1, "local_b8": b8, "load_s": backend.load_seconds}


def bench_server(repeats: int, max_tokens: int, threads: int) -> dict:
    from server_utils import llama_cpp_server_available, start_llama_cpp_server

    print("OpenAI-compatible backend -> llama-cpp-python server on 127.0.0.1")
    if not llama_cpp_server_available():
        print("  skipped: llama-cpp-python[server] not installed")
        return {}
    with tempfile.TemporaryDirectory() as logs:
        server = start_llama_cpp_server(embedded_gguf_path(), Path(logs), n_threads=threads)
        try:
            print(f"  server ({threads} threads) healthy in {server.start_seconds:.2f} s "
                  f"(pid {server.pid}, port {server.port})")
            rates = {}
            for conc in (1, 8):
                backend = OpenAIBackend(OpenAIBackendConfig(
                    base_url=server.base_url, max_concurrency=conc, extra_body=NO_EOS, timeout_s=300))
                backend.check()
                backend.generate(PROMPTS[:1], max_tokens=4)  # warm-up
                rates[conc] = median_run(
                    f"concurrency {conc} (8 requests)", lambda b=backend: tokens_per_s(b, PROMPTS, max_tokens), repeats)
                backend.close()
            print(f"  ratio concurrency 8 / 1: {rates[8] / rates[1]:.2f}x")
            return {"server_c1": rates[1], "server_c8": rates[8], "server_start_s": server.start_seconds}
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--server-threads", type=int, default=os.cpu_count(),
                    help="llama.cpp threads (its own default is half the cores)")
    args = ap.parse_args()
    print(f"max_tokens={args.max_tokens}, repeats={args.repeats}, cpus={os.cpu_count()}")
    if not args.skip_local:
        bench_local(args.repeats, args.max_tokens)
    if not args.skip_server:
        bench_server(args.repeats, args.max_tokens, args.server_threads)


if __name__ == "__main__":
    main()
