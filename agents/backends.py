"""Chat backends behind one small interface: a local transformers model, or an
OpenAI-compatible endpoint (vLLM, llama.cpp's server, OpenAI).

The interface (``ChatBackend``): a batch of conversations in (``list[list[{"role",
"content"}]]``), ``n`` completions per conversation out, each a ``Completion`` with its
text, prompt and completion token counts and finish reason. ``agenerate`` is the async
method; ``generate`` is a blocking wrapper that works from any synchronous code, a worker
thread included (it runs the coroutine on one private background event loop). ``check``
verifies at start-up that the backend can serve, raising ``BackendUnavailable`` with a
one-line reason otherwise (the CLI turns that into exit code 2).

What is covered:
  * ``LocalBackend``: genuinely batched ``model.generate`` (left padding, the tokenizer's
    chat template, ``num_return_sequences=n``), chunked so one call holds at most
    ``max_batch_size`` sequences, run in a one-thread executor so the event loop stays
    free. ``generate_calls`` counts calls to ``model.generate`` so tests can assert batching.
  * ``OpenAIBackend``: the ``openai`` SDK's ``AsyncOpenAI``; concurrency bounded by an
    ``asyncio.Semaphore``; a per-request timeout; retries are the SDK's own
    (``max_retries``: exponential backoff from 0.5 s to 8 s with jitter, ``Retry-After``
    honoured, on connection errors, timeouts, 408/409/429 and 5xx); an httpx event hook
    counts every HTTP request, so ``requests`` and ``retries`` are exact. When one request
    has used up its retries the others are cancelled and ``BackendRequestFailed`` is
    raised, so a dead server ends a run within roughly one backoff schedule.
  * ``n > 1`` against servers that ignore ``n`` (llama.cpp's server answers one choice):
    ``n_mode="auto"`` asks natively once, tops up the missing choices with single
    requests, and remembers to fan out from then on.

What is not covered:
  * streaming, tool calls, logprobs;
  * with native ``n > 1`` the server reports one usage total for all choices; we share it
    among the choices in proportion to their text length (exact when ``n == 1`` and in
    fan-out mode);
  * the local backend's completion token count includes the end-of-sequence token when
    the model emitted one (as OpenAI-compatible servers count it); a completion cut by a
    stop string counts the tokens up to the end of the stop string;
  * stop strings are removed from the returned text (OpenAI semantics); the local backend
    also passes them to ``generate(stop_strings=...)`` so generation ends early.

Environment for ``OpenAIBackend``: ``TEACHLOOP_OPENAI_BASE_URL`` (else
``OPENAI_BASE_URL``), ``OPENAI_API_KEY`` (else ``"EMPTY"``, which local servers accept),
``TEACHLOOP_OPENAI_MODEL``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

T = TypeVar("T")
Message = Mapping[str, str]
Conversation = Sequence[Message]


# --------------------------------------------------------------------------- interface


@dataclass(frozen=True)
class Completion:
    """One sampled completion of one conversation."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"


class BackendError(RuntimeError):
    """Base class of backend failures that a caller may want to report without a trace."""


class BackendUnavailable(BackendError):
    """The backend cannot serve at start-up (endpoint unreachable, bad key, no model)."""


class BackendRequestFailed(BackendError):
    """A request failed for good: a non-retryable error, or retries were used up."""


class ChatBackend(ABC):
    """A chat model: batch of conversations in, ``n`` completions per conversation out."""

    name: str = "backend"

    @abstractmethod
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
        """Sample ``n`` completions for each conversation; result[i] belongs to conversations[i].

        ``temperature == 0`` means greedy decoding. ``ignore_eos`` asks the backend to keep
        generating past the end-of-sequence token (benchmarks; best effort per server).
        """

    def generate(self, conversations: Sequence[Conversation], **kwargs: Any) -> list[list[Completion]]:
        """Blocking ``agenerate``; usable from any thread, also one that runs an event loop."""
        return run_sync(self.agenerate(conversations, **kwargs))

    async def acheck(self) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Raise ``BackendUnavailable`` (one-line reason) if this backend cannot serve."""

    def check(self) -> None:
        """Blocking ``acheck``."""
        run_sync(self.acheck())

    async def aclose(self) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Release resources (connections, executors)."""

    def close(self) -> None:
        run_sync(self.aclose())


def _validate_sampling(n: int, temperature: float, top_p: float, max_tokens: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")


def _truncate_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; returns (text, whether one was found)."""
    if not stop:
        return text, False
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# ------------------------------------------------------------------ sync wrapper (loop)

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="teachloop-backends", daemon=True).start()
        return _loop


def run_sync(coro: Awaitable[T]) -> T:
    """Run ``coro`` to completion on the module's background event loop and return its result.

    One long-lived loop (rather than ``asyncio.run`` per call) keeps HTTP connection pools
    valid between calls. Safe from any thread except the background loop's own.
    """
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()  # type: ignore[union-attr]
        raise RuntimeError("generate()/check() called from the backend loop itself; await the a* method")
    fut = asyncio.run_coroutine_threadsafe(coro, loop)  # type: ignore[arg-type]
    try:
        return fut.result()
    except BaseException:
        fut.cancel()
        raise


async def _gather_fail_fast(coros: Sequence[Awaitable[T]]) -> list[T]:
    """Like ``asyncio.gather``, but the first failure cancels the rest before it is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


# ---------------------------------------------------------------------- local backend


@dataclass
class LocalBackendConfig:
    """In-process transformers model."""

    model: str | None = field(
        default=None,
        metadata={"help": "checkpoint directory (or a .gguf file); None = the embedded SmolLM2-135M-Instruct"},
    )
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ..."})
    dtype: str = field(
        default="auto",
        metadata={"help": "'auto' (float32 on CPU, bfloat16/float16 on GPU), 'float32', 'bfloat16', 'float16'"},
    )
    max_batch_size: int = field(
        default=64, metadata={"help": "most sequences (conversations x n) in one model.generate call"}
    )
    seed: int | None = field(default=None, metadata={"help": "seed torch before each generate call (reproducible)"})
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


# ----------------------------------------------------------- OpenAI-compatible backend


def continues(conversation: Conversation) -> bool:
    """True when the conversation ends in an assistant message to be continued (prefill)."""
    return bool(conversation) and conversation[-1].get("role") == "assistant"


def _template_kwargs(conversation: Conversation) -> dict[str, Any]:
    if continues(conversation):
        return {"continue_final_message": True, "add_generation_prompt": False}
    return {"add_generation_prompt": True}


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _normalise_base_url(url: str) -> str:
    """Append ``/v1`` to a bare ``http://host:port`` (a frequent mistake with vLLM/llama.cpp)."""
    parts = urlsplit(url.rstrip("/"))
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1")
    return urlunsplit(parts)


def _one_line(exc: BaseException) -> str:
    """The most specific message in an exception chain, on one line."""
    msgs = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).strip()
        if text:
            msgs.append(text)
        e = e.__cause__ or e.__context__
    detail = msgs[-1] if msgs else type(exc).__name__
    head = msgs[0] if msgs else ""
    line = detail if head in ("", detail) else f"{head} ({detail})"
    return " ".join(line.split())[:300]


@dataclass
class OpenAIBackendConfig:
    """An OpenAI-compatible chat-completions endpoint (vllm serve, llama.cpp server, OpenAI)."""

    base_url: str | None = field(
        default=None,
        metadata={"help": "e.g. http://127.0.0.1:8000/v1; default $TEACHLOOP_OPENAI_BASE_URL or $OPENAI_BASE_URL"},
    )
    api_key: str | None = field(
        default=None, metadata={"help": "default $OPENAI_API_KEY, else 'EMPTY' (local servers)"}
    )
    model: str | None = field(
        default=None,
        metadata={"help": "model id; default $TEACHLOOP_OPENAI_MODEL, else the first id the server lists"},
    )
    max_concurrency: int = field(default=8, metadata={"help": "most requests in flight at once"})
    timeout_s: float = field(default=120.0, metadata={"help": "per-request timeout (seconds)"})
    max_retries: int = field(
        default=4, metadata={"help": "the openai SDK's retries per request (connection errors, timeouts, "
                                     "408/409/429, 5xx; backoff 0.5 s doubling to 8 s, Retry-After honoured)"}
    )
    health_timeout_s: float = field(default=5.0, metadata={"help": "timeout of the start-up check (GET /models)"})
    n_mode: str = field(
        default="auto",
        metadata={"help": "'auto' (ask for n, fan out if the server ignores it), 'native', 'fanout' (n requests)"},
    )
    extra_body: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "extra JSON fields sent with every request (server-specific)"}
    )
    reasoning: bool = field(
        default=False,
        metadata={"help": "a reasoning model: send max_completion_tokens instead of max_tokens and "
                          "no temperature/top_p (such models refuse them)"},
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "a local HF tokenizer path: a conversation that ends in an assistant message "
                          "(a prefill) is rendered here with its chat template and continued through "
                          "/v1/completions, for servers that cannot continue a chat message "
                          "(llama.cpp); None: the chat API with continue_final_message (vLLM)"},
    )

    def __post_init__(self) -> None:
        self.base_url = self.base_url or _env("TEACHLOOP_OPENAI_BASE_URL", "OPENAI_BASE_URL")
        if self.base_url:
            self.base_url = _normalise_base_url(self.base_url)
        self.api_key = self.api_key or _env("OPENAI_API_KEY") or "EMPTY"
        self.model = self.model or _env("TEACHLOOP_OPENAI_MODEL")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.n_mode not in ("auto", "native", "fanout"):
            raise ValueError(f"n_mode must be auto, native or fanout, got {self.n_mode!r}")


_RETRY_STATUS = {408, 409, 429}
MAX_STOP = 4  # OpenAI's limit on stop strings; more are applied here, on the returned text


class OpenAIBackend(ChatBackend):
    """Chat completions over HTTP with bounded concurrency, timeouts and retries."""

    name = "openai"

    def __init__(self, config: OpenAIBackendConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = OpenAIBackendConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a config or keyword overrides, not both")
        self.config = config
        self.model: str | None = config.model
        self.requests = 0  # HTTP requests sent (first tries and the SDK's retries)
        self.calls = 0  # logical requests (each retried by the SDK up to max_retries times)
        # Set once a native n>1 request came back short (llama.cpp's server ignores n).
        self.server_ignores_n = config.n_mode == "fanout"
        self._tokenizer: Any = None  # loaded on first use, see _render
        # The SDK client and the semaphore belong to one event loop each.
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> tuple[Any, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        state = self._per_loop.get(loop)
        if state is None:
            from openai import AsyncOpenAI

            if not self.config.base_url:
                raise BackendUnavailable(
                    "no endpoint configured: set base_url or TEACHLOOP_OPENAI_BASE_URL / OPENAI_BASE_URL"
                )
            from openai import DefaultAsyncHttpxClient

            async def count(request: Any) -> None:  # every HTTP request, retries included
                self.requests += 1

            client = AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=self.config.api_key,
                timeout=self.config.timeout_s,
                max_retries=self.config.max_retries,
                http_client=DefaultAsyncHttpxClient(event_hooks={"request": [count]}),
            )
            state = (client, asyncio.Semaphore(self.config.max_concurrency))
            self._per_loop[loop] = state
        return state

    async def acheck(self) -> None:
        """GET /models within ``health_timeout_s``; resolves ``model`` if it was not given."""
        import openai

        client, _ = self._client()
        url = self.config.base_url
        try:
            self.calls += 1  # one request, not retried: a dead endpoint fails the start at once
            page = await client.with_options(max_retries=0).models.list(
                timeout=self.config.health_timeout_s)
            ids = [m.id for m in page.data]
        except openai.AuthenticationError as e:
            raise BackendUnavailable(f"{url} refused the API key (HTTP 401); set OPENAI_API_KEY") from e
        except openai.APIStatusError as e:
            raise BackendUnavailable(f"{url}/models answered HTTP {e.status_code}: {_one_line(e)}") from e
        except openai.APIConnectionError as e:
            raise BackendUnavailable(f"cannot reach {url}: {_one_line(e)}") from e
        if self.model is None:
            if not ids:
                raise BackendUnavailable(f"{url} lists no models; set the model explicitly")
            self.model = ids[0]
        elif ids and self.model not in ids:
            raise BackendUnavailable(f"model {self.model!r} not served at {url}; it serves: {', '.join(ids[:10])}")

    async def aclose(self) -> None:
        state = self._per_loop.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[0].close()

    @property
    def retries(self) -> int:
        """Requests the SDK retried (the health check's GET /models counts as a call too)."""
        return self.requests - self.calls

    def _render(self, messages: list[Message]) -> str | None:
        """The raw prompt continuing the final assistant message, rendered with the local
        tokenizer's chat template (config.tokenizer), or None: the chat API is used."""
        if not self.config.tokenizer or not continues(messages):
            return None
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.config.tokenizer)
            except (OSError, ValueError) as e:
                raise BackendUnavailable(f"cannot load tokenizer {self.config.tokenizer!r}: {_one_line(e)}") from e
        return self._tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)

    async def _create(self, messages: list[Message], n: int, sampling: dict[str, Any]) -> Any:
        """One chat-completions request (a completions request for a prompt rendered here,
        see ``_render``) with our retry loop; raises BackendRequestFailed."""
        import openai

        client, sem = self._client()
        prompt = self._render(messages)
        if prompt is not None:
            body = {k: v for k, v in sampling.get("extra_body", {}).items()
                    if k not in ("continue_final_message", "add_generation_prompt")}
            sampling = {**{k: v for k, v in sampling.items() if k != "extra_body"},
                        **({"extra_body": body} if body else {})}
        self.calls += 1
        try:
            async with sem:
                if prompt is not None:
                    return await client.completions.create(
                        model=self.model, prompt=prompt, n=n, **sampling  # type: ignore[arg-type]
                    )
                return await client.chat.completions.create(
                    model=self.model, messages=messages, n=n, **sampling  # type: ignore[arg-type]
                )
        except openai.APIStatusError as e:
            if e.status_code in _RETRY_STATUS or e.status_code >= 500:
                raise BackendRequestFailed(
                    f"request to {self.config.base_url} failed after {self.config.max_retries + 1} "
                    f"attempts: {_one_line(e)}") from e
            raise BackendRequestFailed(
                f"{self.config.base_url} answered HTTP {e.status_code}: {_one_line(e)}") from e
        except openai.APIConnectionError as e:  # includes APITimeoutError
            raise BackendRequestFailed(
                f"request to {self.config.base_url} failed after {self.config.max_retries + 1} "
                f"attempts: {_one_line(e)}") from e

    async def _one_conversation(
        self, messages: list[Message], n: int, sampling: dict[str, Any], stop: Sequence[str] | None
    ) -> list[Completion]:
        out: list[Completion] = []

        def take(resp: Any, limit: int) -> None:
            choices = list(resp.choices)[:limit]
            usage = resp.usage
            prompt = usage.prompt_tokens if usage else 0
            total = usage.completion_tokens if usage else 0
            texts = [(c.message.content if hasattr(c, "message") else c.text) or "" for c in choices]
            weights = [max(len(t), 1) for t in texts]
            for c, text, w in zip(choices, texts, weights, strict=True):
                count = total if len(choices) == 1 else round(total * w / sum(weights))
                text, cut = _truncate_at_stop(text, stop)  # servers remove stops; be sure
                reason = "stop" if cut or c.finish_reason == "stop" else (c.finish_reason or "length")
                out.append(Completion(text, prompt, count, reason))

        if n > 1 and not self.server_ignores_n:
            resp = await self._create(messages, n, sampling)
            take(resp, n)
            if len(out) < n:
                if self.config.n_mode == "auto":
                    self.server_ignores_n = True
                    log.info("%s ignores n; fanning out from now on", self.config.base_url)
        missing = n - len(out)
        if missing > 0:
            resps = await _gather_fail_fast([self._create(messages, 1, sampling) for _ in range(missing)])
            for r in resps:
                take(r, 1)
        return out

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
        response_format: dict[str, Any] | None = None,
    ) -> list[list[Completion]]:
        """``response_format``: structured output (a JSON schema), sent as it is."""
        _validate_sampling(n, temperature, top_p, max_tokens)
        if not conversations:
            return []
        if self.model is None:
            await self.acheck()
        extra = dict(self.config.extra_body)
        if ignore_eos:
            extra.setdefault("ignore_eos", True)  # vLLM; llama.cpp: pass logit_bias in extra_body
        if self.config.reasoning:  # no sampling parameters: reasoning models refuse them
            sampling: dict[str, Any] = {"max_completion_tokens": max_tokens}
        else:
            sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        if stop:
            sampling["stop"] = list(stop)[:MAX_STOP]  # the rest are cut here (_truncate_at_stop)
        if response_format is not None:
            sampling["response_format"] = response_format
        if extra:
            sampling["extra_body"] = extra
        def for_(c: Conversation) -> dict[str, Any]:
            if not continues(c):
                return sampling
            # an assistant prefill: vLLM's chat API continues it with these two flags
            body = {**sampling.get("extra_body", {}), **_template_kwargs(c)}
            return {**sampling, "extra_body": body}

        return await _gather_fail_fast(
            [self._one_conversation([dict(m) for m in c], n, for_(c), stop) for c in conversations]
        )


def make_backend(config: LocalBackendConfig | OpenAIBackendConfig) -> ChatBackend:
    """The backend for a config object."""
    if isinstance(config, LocalBackendConfig):
        return LocalBackend(config)
    if isinstance(config, OpenAIBackendConfig):
        return OpenAIBackend(config)
    raise TypeError(f"unknown backend config {type(config).__name__}")
