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
    ``asyncio.Semaphore`` per endpoint; a per-request timeout; retries are the SDK's own
    (``max_retries``: exponential backoff from 0.5 s to 8 s with jitter, ``Retry-After``
    honoured, on connection errors, timeouts, 408/409/429 and 5xx); an httpx event hook
    counts every HTTP request, so ``requests`` and ``retries`` are exact. When one request
    has used up its retries the others are cancelled and ``BackendRequestFailed`` is
    raised, so a dead server ends a run within roughly one backoff schedule.
  * several endpoints per role (``base_url`` a list): least-loaded routing, failover to
    another endpoint after the SDK's retries, cool-down and probing of a down endpoint,
    ``EndpointsDown`` when none answers, per-endpoint statistics (agents/endpoints.py);
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

from teachloop.agents.backend_local import LocalBackend, LocalBackendConfig
from teachloop.agents.backend_openai import MAX_STOP, OpenAIBackend, OpenAIBackendConfig
from teachloop.agents.chat import (
    BackendError,
    BackendRequestFailed,
    BackendUnavailable,
    ChatBackend,
    Completion,
    EndpointsDown,
    Conversation,
    Message,
    _truncate_at_stop,
    continues,
    run_sync,
)

__all__ = ["BackendError", "BackendRequestFailed", "BackendUnavailable", "ChatBackend",
           "Completion", "Conversation", "EndpointsDown", "LocalBackend", "LocalBackendConfig", "MAX_STOP",
           "Message", "OpenAIBackend", "OpenAIBackendConfig", "continues", "make_backend",
           "run_sync", "_truncate_at_stop"]


def make_backend(config: LocalBackendConfig | OpenAIBackendConfig) -> ChatBackend:
    """The backend for a config object."""
    if isinstance(config, LocalBackendConfig):
        return LocalBackend(config)
    if isinstance(config, OpenAIBackendConfig):
        return OpenAIBackend(config)
    raise TypeError(f"unknown backend config {type(config).__name__}")
