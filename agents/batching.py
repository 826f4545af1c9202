"""Request coalescing: parallel graph branches share one batched ``model.generate``.

The teacher loop runs each chain in its own LangGraph branch (``Send``), so the student probe
of chain 3 and that of chain 7 are two separate ``agenerate`` calls. A local transformers
backend runs one ``generate`` at a time; called naively it would run them one after the other
with a batch of one conversation each. ``CoalescingBackend`` wraps any ``ChatBackend``: calls
that arrive within ``window_s`` of each other (and while the inner backend is busy) with the
same sampling parameters are concatenated into ONE inner call, and each caller gets its own
slice of the result. The inner backend still chunks by its own ``max_batch_size``.

What is covered: any number of event loops (state is per loop), callers cancelled while
waiting, an inner failure raised to every caller of that batch.
What is not: fairness across sampling groups beyond first-come order; streaming. An
OpenAI-compatible backend needs no wrapper (it is concurrent already).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from teachloop.agents.backends import ChatBackend, Completion, Conversation


@dataclass
class _LoopState:
    pending: dict[tuple, list[tuple[list[Conversation], asyncio.Future]]] = field(default_factory=dict)
    slots: asyncio.Semaphore | None = None
    pump: asyncio.Task | None = None
    tasks: set = field(default_factory=set)


class CoalescingBackend(ChatBackend):
    """Wraps ``inner``; concurrent calls with equal sampling settings become one inner call."""

    def __init__(self, inner: ChatBackend, *, window_s: float = 0.05, max_inflight: int = 1) -> None:
        self.inner = inner
        self.name = f"coalesced:{inner.name}"
        self.window_s = window_s
        self.max_inflight = max_inflight
        self.calls = 0  # inner agenerate calls made
        self.requests = 0  # agenerate calls received
        self.batch_sizes: list[int] = []  # conversations per inner call
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def __getattr__(self, name: str) -> Any:  # model_path, model, config, ... of the inner backend
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        st = self._per_loop.get(loop)
        if st is None:
            st = _LoopState(slots=asyncio.Semaphore(self.max_inflight))
            self._per_loop[loop] = st
        return st

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
        if not conversations:
            return []
        self.requests += 1
        st = self._state()
        key = (n, temperature, top_p, max_tokens, tuple(stop or ()), ignore_eos)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        st.pending.setdefault(key, []).append((list(conversations), fut))
        if st.pump is None:
            st.pump = asyncio.ensure_future(self._pump(st))
        return await fut

    async def _pump(self, st: _LoopState) -> None:
        try:
            while st.pending:
                await asyncio.sleep(self.window_s)  # let concurrent branches arrive
                assert st.slots is not None
                await st.slots.acquire()  # wait for the inner backend; requests keep piling up
                if not st.pending:
                    st.slots.release()
                    break
                key = next(iter(st.pending))
                reqs = st.pending.pop(key)
                task = asyncio.ensure_future(self._run(st, key, reqs))
                st.tasks.add(task)
                task.add_done_callback(st.tasks.discard)
        finally:
            st.pump = None

    async def _run(self, st: _LoopState, key: tuple, reqs: list[tuple[list[Conversation], asyncio.Future]]) -> None:
        n, temperature, top_p, max_tokens, stop, ignore_eos = key
        live = [(c, f) for c, f in reqs if not f.done()]
        try:
            if not live:
                return
            flat = [conv for convs, _ in live for conv in convs]
            self.calls += 1
            self.batch_sizes.append(len(flat))
            try:
                out = await self.inner.agenerate(flat, n=n, temperature=temperature, top_p=top_p,
                                                 max_tokens=max_tokens, stop=list(stop) or None,
                                                 ignore_eos=ignore_eos)
            except BaseException as e:  # noqa: BLE001 - handed to every caller of the batch
                for _, f in live:
                    if not f.done():
                        f.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
                if not isinstance(e, Exception):
                    raise
                return
            i = 0
            for convs, f in live:
                part = out[i:i + len(convs)]
                i += len(convs)
                if not f.done():
                    f.set_result(part)
        finally:
            assert st.slots is not None
            st.slots.release()

    async def acheck(self) -> None:
        await self.inner.acheck()

    async def aclose(self) -> None:
        await self.inner.aclose()
