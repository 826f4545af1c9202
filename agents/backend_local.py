"""``LocalBackend``: a transformers model in this process, genuinely batched (see
``teachloop.agents.backends`` for what is covered)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teachloop.agents.chat import (
    Completion,
    BackendUnavailable,
    ChatBackend,
    Conversation,
    Message,
    _validate_sampling,
    _truncate_at_stop,
    _template_kwargs,
)

log = logging.getLogger(__name__)


@dataclass
class LocalBackendConfig:
    """In-process transformers model."""

    model: str | None = field(
        default=None,
        metadata={"help": "checkpoint directory (or a .gguf file); None = the embedded SmolLM2-135M-Instruct"},
    )
    device: str = field(default_factory=lambda: os.environ.get("TEACHLOOP_LOCAL_DEVICE", "auto"),
                        metadata={"help": "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', "
                                  "...; default: env TEACHLOOP_LOCAL_DEVICE, else auto"})
    dtype: str = field(
        default_factory=lambda: os.environ.get("TEACHLOOP_LOCAL_DTYPE", "auto"),
        metadata={"help": "'auto' (float32 on CPU, bfloat16/float16 on GPU), 'float32', "
                  "'bfloat16', 'float16'; default: env TEACHLOOP_LOCAL_DTYPE (e.g. float32 to "
                  "sample on a GPU exactly as on a CPU run), else auto"},
    )
    max_batch_size: int = field(
        default=64, metadata={"help": "most sequences (conversations x n) in one model.generate call"}
    )
    seed: int | None = field(default=None, metadata={"help": "seed torch before each generate call (reproducible)"})
    share_prefill: bool = field(
        default=True, metadata={"help": "with n > 1 samples per conversation, run the prompt's "
                                "forward pass once and copy its KV cache n times, instead of "
                                "once per sample as model.generate(num_return_sequences=n) does"})
    torch_threads: int | None = field(
        default=None, metadata={"help": "torch.set_num_threads on load; None = torch's default"}
    )

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")


class LocalBackend(ChatBackend):
    """transformers ``generate`` in-process, batched across conversations and samples."""

    name = "local"

    def __init__(self, config: LocalBackendConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = LocalBackendConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a config or keyword overrides, not both")
        self.config = config
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: str | None = None
        self.model_path: Path | None = None
        self.load_seconds: float | None = None
        self.generate_calls = 0  # calls to model.generate, for tests and logs
        self._load_lock = threading.Lock()
        # One worker: model.generate is not re-entrant, and one call already uses all cores.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="teachloop-local")

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, *, path: str | Path | None = None,
                    config: LocalBackendConfig | None = None) -> LocalBackend:
        """A backend over a model already in memory (e.g. the policy being trained, for the
        online teacher's probes). The caller keeps ownership and train/eval mode; the
        tokenizer is copied with left padding."""
        import copy

        b = cls(config or LocalBackendConfig())
        tok = copy.copy(tokenizer)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        b.model, b.tokenizer = model, tok
        b.device = str(next(model.parameters()).device)
        b.model_path = Path(path) if path is not None else Path(getattr(model, "name_or_path", "") or "policy")
        b.load_seconds = 0.0
        return b

    # ..................................................................... loading
    def load(self) -> LocalBackend:
        """Load model and tokenizer (idempotent); converts the embedded model on first use."""
        with self._load_lock:
            if self.model is not None:
                return self
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            t0 = time.perf_counter()
            if self.config.torch_threads:
                torch.set_num_threads(self.config.torch_threads)
            if self.config.model is None:
                from teachloop.agents.embedded import embedded_model_path

                path = embedded_model_path()
            else:
                path = Path(self.config.model).expanduser()
            device = self.config.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype_name = self.config.dtype
            if dtype_name == "auto":
                if device.startswith("cuda"):
                    dtype_name = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
                else:
                    dtype_name = "float32"
            if dtype_name not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"local backend dtype {dtype_name!r}: use auto, float32, "
                                 "bfloat16 or float16")
            dtype = getattr(torch, dtype_name)
            if path.suffix == ".gguf":
                from teachloop.agents.embedded import unflag_quantized

                kw: dict[str, Any] = {"gguf_file": path.name}
                src = str(path.parent)
            else:
                kw, src = {}, str(path)
            tokenizer = AutoTokenizer.from_pretrained(src, **kw)
            model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, **kw)
            if "gguf_file" in kw:
                unflag_quantized(model)
            model.to(device).eval()
            tokenizer.padding_side = "left"  # decoder-only batching: pad on the left
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            if getattr(tokenizer, "chat_template", None) is None:
                raise BackendUnavailable(f"tokenizer at {src} has no chat template")
            self.model, self.tokenizer, self.device, self.model_path = model, tokenizer, device, path
            self.load_seconds = time.perf_counter() - t0
            log.info("loaded %s on %s (%s) in %.1f s", path, device, dtype_name, self.load_seconds)
            return self

    async def acheck(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.load)
        except BackendUnavailable:
            raise
        except Exception as e:  # missing files, bad checkpoint, CUDA errors
            raise BackendUnavailable(f"local model cannot be loaded: {type(e).__name__}: {e}") from e

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # .................................................................. generation
    async def agenerate(
        self,
        conversations: Sequence[Conversation],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        stop: Sequence[str] | None = None,
        ignore_eos: bool = False,
    ) -> list[list[Completion]]:
        _validate_sampling(n, temperature, top_p, max_tokens)
        if not conversations:
            return []
        return await asyncio.get_running_loop().run_in_executor(
            self._executor,
            self._generate_blocking,
            [list(c) for c in conversations],
            n,
            temperature,
            top_p,
            max_tokens,
            list(stop) if stop else None,
            ignore_eos,
        )

    def plan_chunks(self, num_conversations: int, n: int) -> list[tuple[list[int], int]]:
        """Split work into generate calls: (conversation indices, samples per conversation).

        With ``n <= max_batch_size`` each call holds ``max_batch_size // n`` conversations
        with all their ``n`` samples; otherwise each conversation gets calls of at most
        ``max_batch_size`` samples.
        """
        b = self.config.max_batch_size
        if n <= b:
            k = b // n
            return [(list(range(i, min(i + k, num_conversations))), n) for i in range(0, num_conversations, k)]
        chunks = []
        for i in range(num_conversations):
            left = n
            while left > 0:
                chunks.append(([i], min(b, left)))
                left -= b
        return chunks

    def _generate_blocking(
        self,
        conversations: list[list[Message]],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: list[str] | None,
        ignore_eos: bool,
    ) -> list[list[Completion]]:
        import torch

        self.load()
        tok, model = self.tokenizer, self.model
        texts = [tok.apply_chat_template(c, tokenize=False, **_template_kwargs(c)) for c in conversations]
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(tok.eos_token_id)
        pad_id = tok.pad_token_id
        results: list[list[Completion]] = [[] for _ in conversations]
        for idxs, samples in self.plan_chunks(len(conversations), n):
            enc = tok([texts[i] for i in idxs], return_tensors="pt", padding=True, add_special_tokens=False)
            input_ids, attention = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
            kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": pad_id}
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                              num_return_sequences=samples)
            else:  # greedy refuses num_return_sequences > 1: repeat the inputs instead
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                input_ids = input_ids.repeat_interleave(samples, dim=0)
                attention = attention.repeat_interleave(samples, dim=0)
            if stop:
                kwargs.update(stop_strings=stop, tokenizer=tok)
            if ignore_eos:
                kwargs["min_new_tokens"] = max_tokens
            if self.config.seed is not None:
                torch.manual_seed(self.config.seed + self.generate_calls)
            with torch.inference_mode():
                if samples > 1 and self.config.share_prefill and input_ids.shape[1] > 1:
                    if temperature > 0:
                        kwargs.pop("num_return_sequences")
                        input_ids = input_ids.repeat_interleave(samples, dim=0)
                        attention = attention.repeat_interleave(samples, dim=0)
                    kwargs["cache"] = _shared_prefill(model, enc, samples, self.device)
                out = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
            self.generate_calls += 1
            prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
            new = out[:, enc["input_ids"].shape[1]:].tolist()
            for row, ids in enumerate(new):
                k = idxs[row // samples]
                end = next((j for j, t in enumerate(ids) if t in eos_ids or t == pad_id), None)
                body = ids if end is None else ids[:end]
                text, cut = _truncate_at_stop(tok.decode(body, skip_special_tokens=True), stop)
                if cut:
                    count, reason = len(body), "stop"
                elif end is not None and not ignore_eos:
                    count, reason = end + 1, "stop"
                else:
                    count, reason = len(body), "length"
                results[k].append(Completion(text, int(prompt_lens[row // samples]), count, reason))
        return results


def _shared_prefill(model: Any, enc: Any, samples: int, device: str) -> Any:
    """The KV cache of every prompt but its last token, computed once and repeated
    ``samples`` times along the batch (``DynamicCache.batch_repeat_interleave``), for
    ``model.generate`` to continue from: it then runs only the last prompt token and the new
    tokens per sample. The position ids are the ones ``generate`` derives from the left-padded
    attention mask, so the result equals the unshared call (``tests/test_backends.py``).
    ``benchmarks/bench_prefill.py`` measures the saving."""
    from transformers import DynamicCache

    ids = enc["input_ids"].to(device)[:, :-1]
    mask = enc["attention_mask"].to(device)
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, :-1]
    cache = DynamicCache(config=model.config)
    model(input_ids=ids, attention_mask=mask[:, :-1], position_ids=pos, cache=cache,
          use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(samples)
    return cache


# ----------------------------------------------------------- OpenAI-compatible backend
