"""``OpenAIBackend``: an OpenAI-compatible endpoint through the ``openai`` SDK (see
``teachloop.agents.backends`` for what is covered)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from teachloop.agents.endpoints import Endpoint, EndpointPool, Failover, Skip
from teachloop.agents.chat import (
    Completion,
    BackendUnavailable,
    BackendRequestFailed,
    ChatBackend,
    Conversation,
    Message,
    _validate_sampling,
    _truncate_at_stop,
    _gather_fail_fast,
    continues,
    _template_kwargs,
    _env,
    _normalise_base_url,
    _one_line,
)

log = logging.getLogger(__name__)


@dataclass
class OpenAIBackendConfig:
    """An OpenAI-compatible chat-completions endpoint (vllm serve, llama.cpp server, OpenAI)."""

    base_url: str | list[str] | None = field(
        default=None,
        metadata={"help": "e.g. http://127.0.0.1:8000/v1, or a list of such URLs (several servers of the "
                          "same model: least-loaded routing and failover, agents/endpoints.py); default "
                          "$TEACHLOOP_OPENAI_BASE_URL or $OPENAI_BASE_URL (comma-separated for several)"},
    )
    api_key: str | None = field(
        default=None, metadata={"help": "default $OPENAI_API_KEY, else 'EMPTY' (local servers)"}
    )
    model: str | None = field(
        default=None,
        metadata={"help": "model id; default $TEACHLOOP_OPENAI_MODEL, else the first id the server lists"},
    )
    max_concurrency: int = field(default=8, metadata={"help": "most requests in flight at once, per endpoint"})
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
    cooldown_s: float = field(
        default=5.0, metadata={"help": "a down endpoint is probed again after this many seconds, doubling "
                                       "per fall (to 300 s) until it answers"}
    )
    role: str = field(default="", metadata={"help": "the role's name in messages and statistics "
                                                    "(student, teacher)"})
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "a local HF tokenizer path: a conversation that ends in an assistant message "
                          "(a prefill) is rendered here with its chat template and continued through "
                          "/v1/completions, for servers that cannot continue a chat message "
                          "(llama.cpp); None: the chat API with continue_final_message (vLLM)"},
    )

    def __post_init__(self) -> None:
        url = self.base_url or _env("TEACHLOOP_OPENAI_BASE_URL", "OPENAI_BASE_URL")
        urls = [u.strip() for u in (url.split(",") if isinstance(url, str) else url or []) if u.strip()]
        urls = list(dict.fromkeys(_normalise_base_url(u) for u in urls))
        self.base_url = (urls[0] if len(urls) == 1 else urls) if urls else None
        self.api_key = self.api_key or _env("OPENAI_API_KEY") or "EMPTY"
        self.model = self.model or _env("TEACHLOOP_OPENAI_MODEL")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.cooldown_s <= 0:
            raise ValueError(f"cooldown_s must be > 0, got {self.cooldown_s}")
        if self.n_mode not in ("auto", "native", "fanout"):
            raise ValueError(f"n_mode must be auto, native or fanout, got {self.n_mode!r}")

    @property
    def base_urls(self) -> list[str]:
        """``base_url`` as a list (empty when none is configured)."""
        if not self.base_url:
            return []
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


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
        self.requests = 0  # HTTP requests sent (first tries, the SDK's retries, probes)
        self.calls = 0  # requests made (each retried by the SDK up to max_retries times)
        # Set once a native n>1 request came back short (llama.cpp's server ignores n).
        self.server_ignores_n = config.n_mode == "fanout"
        self._tokenizer: Any = None  # loaded on first use, see _render
        # the endpoints' health and statistics (shared by every event loop)
        self.pool: EndpointPool | None = (
            EndpointPool(config.base_urls, self._probe, cooldown_s=config.cooldown_s, role=config.role)
            if config.base_urls else None)
        # The SDK clients and semaphores (one of each per endpoint) belong to one event loop each.
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, tuple[Any, asyncio.Semaphore]]] = weakref.WeakKeyDictionary()

    def _pool(self) -> EndpointPool:
        if self.pool is None:
            raise BackendUnavailable(
                "no endpoint configured: set base_url or TEACHLOOP_OPENAI_BASE_URL / OPENAI_BASE_URL")
        return self.pool

    def _client(self, ep: Endpoint | None = None) -> tuple[Any, asyncio.Semaphore]:
        """The SDK client and concurrency semaphore of endpoint ``ep`` (default: the first)."""
        ep = ep or self._pool().endpoints[0]
        loop = asyncio.get_running_loop()
        per = self._per_loop.setdefault(loop, {})
        state = per.get(ep.url)
        if state is None:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            async def count(request: Any) -> None:  # every HTTP request, retries included
                self.requests += 1
                ep.stats.http += 1

            client = AsyncOpenAI(
                base_url=ep.url,
                api_key=self.config.api_key,
                timeout=self.config.timeout_s,
                max_retries=self.config.max_retries,
                http_client=DefaultAsyncHttpxClient(event_hooks={"request": [count]}),
            )
            state = (client, asyncio.Semaphore(self.config.max_concurrency))
            per[ep.url] = state
        return state

    async def _models(self, ep: Endpoint) -> list[str]:
        """GET /models on ``ep`` within ``health_timeout_s``, not retried; BackendUnavailable."""
        import openai

        client, _ = self._client(ep)
        url = ep.url
        try:
            self.calls += 1  # one request, not retried: a dead endpoint fails the start at once
            page = await client.with_options(max_retries=0).models.list(
                timeout=self.config.health_timeout_s)
            return [m.id for m in page.data]
        except openai.AuthenticationError as e:
            raise BackendUnavailable(f"{url} refused the API key (HTTP 401); set OPENAI_API_KEY") from e
        except openai.APIStatusError as e:
            raise BackendUnavailable(f"{url}/models answered HTTP {e.status_code}: {_one_line(e)}") from e
        except openai.APIConnectionError as e:
            raise BackendUnavailable(f"cannot reach {url}: {_one_line(e)}") from e

    async def _probe(self, ep: Endpoint) -> None:
        """The pool's probe of a down endpoint: raises unless it answers HTTP (any status)."""
        import openai

        client, _ = self._client(ep)
        self.calls += 1
        try:
            await client.with_options(max_retries=0).models.list(timeout=self.config.health_timeout_s)
        except openai.APIStatusError:
            return  # it answers: the process is up

    async def acheck(self) -> None:
        """GET /models on every endpoint at once within ``health_timeout_s``; resolves
        ``model`` if it was not given. Endpoints that do not answer are marked down (a warning
        names them) as long as one answers; BackendUnavailable when none does."""
        pool = self._pool()
        got = await asyncio.gather(*(self._models(ep) for ep in pool.endpoints), return_exceptions=True)
        ids_by: dict[str, list[str]] = {}
        errors: list[tuple[Endpoint, BaseException]] = []
        for ep, r in zip(pool.endpoints, got, strict=True):
            if isinstance(r, BaseException):
                if not isinstance(r, BackendUnavailable):
                    raise r
                errors.append((ep, r))
            else:
                ids_by[ep.url] = r
        if not ids_by:
            if len(errors) == 1:
                raise errors[0][1]
            raise BackendUnavailable(f"none of the {len(errors)} endpoints answers: "
                                     + "; ".join(str(e) for _, e in errors))
        for ep, e in errors:
            ep.mark_down(str(e))
            log.warning("%s; going on with %d of %d endpoints", e, len(ids_by), len(pool))
        for ep in pool.endpoints:
            if ep.url in ids_by:
                ep.mark_up()
        first = next(iter(ids_by.values()))
        if self.model is None:
            if not first:
                raise BackendUnavailable(f"{next(iter(ids_by))} lists no models; set the model explicitly")
            self.model = first[0]
        for url, ids in ids_by.items():
            if ids and self.model not in ids:
                raise BackendUnavailable(
                    f"model {self.model!r} not served at {url}; it serves: {', '.join(ids[:10])}")

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        per = self._per_loop.pop(asyncio.get_running_loop(), None)
        for client, _ in (per or {}).values():
            await client.close()

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per endpoint: requests, ok, failed, retried here, in flight, HTTP requests, downs."""
        return self.pool.stats() if self.pool is not None else []

    def endpoint_summary(self) -> list[str]:
        """One line per endpoint (a run prints them at its end)."""
        return self.pool.summary_lines() if self.pool is not None else []

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
        see ``_render``), routed by the endpoint pool (agents/endpoints.py: least-loaded
        healthy endpoint, another one when it fails after the SDK's retries); raises
        BackendRequestFailed, or EndpointsDown when no endpoint answers."""
        import openai

        pool = self._pool()
        prompt = self._render(messages)
        if prompt is not None:
            body = {k: v for k, v in sampling.get("extra_body", {}).items()
                    if k not in ("continue_final_message", "add_generation_prompt")}
            sampling = {**{k: v for k, v in sampling.items() if k != "extra_body"},
                        **({"extra_body": body} if body else {})}
        attempts = self.config.max_retries + 1

        async def send(ep: Endpoint) -> Any:
            client, sem = self._client(ep)
            async with sem:
                if not ep.healthy:
                    raise Skip
                self.calls += 1
                try:
                    if prompt is not None:
                        return await client.completions.create(
                            model=self.model, prompt=prompt, n=n, **sampling  # type: ignore[arg-type]
                        )
                    return await client.chat.completions.create(
                        model=self.model, messages=messages, n=n, **sampling  # type: ignore[arg-type]
                    )
                except openai.APIStatusError as e:
                    if e.status_code >= 500 or e.status_code in _RETRY_STATUS:
                        raise Failover(f"request to {ep.url} failed after {attempts} attempts: "
                                       f"{_one_line(e)}", down=e.status_code >= 500, reason=_one_line(e)) from e
                    raise BackendRequestFailed(
                        f"{ep.url} answered HTTP {e.status_code}: {_one_line(e)}") from e
                except openai.APIConnectionError as e:  # includes APITimeoutError
                    raise Failover(f"request to {ep.url} failed after {attempts} attempts: "
                                   f"{_one_line(e)}", down=True, reason=_one_line(e)) from e

        return await pool.route(send)

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
                if self.config.n_mode == "auto" and not self.server_ignores_n:
                    self.server_ignores_n = True  # said once (concurrent requests find it together)
                    log.debug("%s ignores n; fanning out from now on", ", ".join(self.config.base_urls))
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
