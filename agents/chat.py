"""The chat interface shared by every backend: ``ChatBackend``, ``Completion``, the error
types, ``run_sync`` and small helpers. The backends: ``backend_local.py`` (transformers, in
process) and ``backend_openai.py`` (an OpenAI-compatible endpoint); ``backends.py`` is the
public face (its docstring says what each covers) and ``make_backend``."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
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


class EndpointsDown(RuntimeError):
    """Every endpoint of a role is down (agents/endpoints.py): the run cannot go on. Not a
    ``BackendError`` on purpose: the teacher loop records those as rejections and goes on; this
    one stops the run with one line (exit code 2), and ``--resume`` continues it later."""


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
    errors = [t.exception() for t in tasks if not t.cancelled()]  # each retrieved, none left unseen
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return [t.result() for t in tasks]


# ---------------------------------------------------------------------- local backend


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
