"""Several OpenAI-compatible endpoints behind one role (student or teacher): routing, failover,
cool-down and per-endpoint statistics. ``OpenAIBackend`` (agents/backend_openai.py) owns one
``EndpointPool`` and sends every request through ``EndpointPool.route``.

Rules (DESIGN.md, "The teacher's conversation and its endpoints"):

* A request goes to the **least-loaded healthy endpoint**: fewest requests in flight (waiting
  for that endpoint's concurrency slot included), then fewest requests so far, then the order
  of ``base_url``.
* A request that fails there after the openai SDK's own retries with a connection error, a
  timeout or HTTP 5xx marks the endpoint **down** and is sent again to another healthy
  endpoint (HTTP 408/409/429 after the retries: sent again elsewhere, the endpoint stays up;
  any other HTTP error is the request's own fault and fails it at once). A request is never
  sent twice to the same endpoint, so it is tried at most once per endpoint.
* A down endpoint is **probed** (``GET /models``, no retries) after a cool-down of
  ``cooldown_s`` doubling per consecutive fall to ``max_cooldown_s``, and taken back when it
  answers HTTP at all (a process that answers is up; its per-request errors are the requests'
  failures). A successful request resets its cool-down.
* When a request finds no healthy endpoint left to try, every down endpoint is probed at once:
  one that answers is taken back; if none does, ``EndpointsDown`` is raised. It is not a
  ``BackendError``: the teacher loop does not record it as a rejection, the run stops with one
  line (exit code 2) and ``--resume`` continues once the servers are back. If the endpoints are
  up but the request failed on each of them, it is ``BackendRequestFailed`` (a recorded
  ``backend`` rejection; the run goes on).

Not covered: weighting endpoints by their speed (least-in-flight adapts to it only through the
in-flight counts), health checks of endpoints that are up (they are only watched through their
requests), and sharing health between processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from teachloop.agents.chat import BackendRequestFailed, EndpointsDown, _one_line

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class EndpointStats:
    """What one endpoint did for its role."""

    url: str
    requests: int = 0  # requests sent here (each possibly retried by the SDK: see http)
    ok: int = 0  # answered
    failed: int = 0  # failed here after the SDK's retries (any error)
    rerouted_in: int = 0  # requests that had failed on another endpoint, sent again here
    in_flight: int = 0  # now: sent or waiting for this endpoint's concurrency slot
    http: int = 0  # HTTP requests (the SDK's retries and the probes included)
    downs: int = 0  # times marked down
    probes: int = 0  # probes of this endpoint while it was down
    healthy: bool = True
    last_error: str = ""

    def row(self) -> dict[str, Any]:
        return asdict(self)


class Failover(Exception):
    """Raised by a send function: the request failed on this endpoint after the SDK's retries
    in a way another endpoint may not share. ``down``: the endpoint itself looks dead
    (connection error, timeout, 5xx) and is marked down."""

    def __init__(self, message: str, *, down: bool, reason: str = "") -> None:
        super().__init__(message)
        self.down = down
        self.reason = reason or message  # the cause alone (the endpoint's last_error)


class Skip(Exception):
    """Raised by a send function that found its endpoint down once it had a concurrency slot:
    the request was not sent; the pool picks another endpoint."""


@dataclass
class Endpoint:
    url: str
    cooldown_s: float
    max_cooldown_s: float
    stats: EndpointStats = field(init=False)
    next_probe: float = 0.0  # monotonic time of the next probe while down
    cooldown: float = 0.0  # current cool-down (doubles per fall without a success between)
    probing: bool = False

    def __post_init__(self) -> None:
        self.stats = EndpointStats(self.url)
        self.cooldown = self.cooldown_s

    @property
    def healthy(self) -> bool:
        return self.stats.healthy

    def mark_down(self, why: str) -> None:
        self.stats.last_error = why[:300]
        if not self.stats.healthy:
            return
        self.stats.healthy = False
        self.stats.downs += 1
        self.next_probe = time.monotonic() + self.cooldown
        log.debug("endpoint %s down (probe in %.0f s): %s", self.url, self.cooldown, why)
        self.cooldown = min(self.cooldown * 2, self.max_cooldown_s)

    def mark_up(self) -> None:
        if not self.stats.healthy:
            log.debug("endpoint %s answers again; taken back", self.url)
        self.stats.healthy = True

    def succeeded(self) -> None:
        self.stats.ok += 1
        self.cooldown = self.cooldown_s


class EndpointPool:
    """The endpoints of one role; see the module docstring for the rules.

    ``probe(endpoint)`` is an async callable that raises when the endpoint does not answer;
    the pool calls it for down endpoints (in the background once their cool-down is over, and
    all at once when a request finds no healthy endpoint).
    """

    def __init__(self, urls: Sequence[str], probe: Callable[[Endpoint], Awaitable[None]], *,
                 cooldown_s: float = 5.0, max_cooldown_s: float = 300.0, role: str = "") -> None:
        if not urls:
            raise ValueError("an endpoint pool needs at least one URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate endpoint URLs: {list(urls)}")
        self.endpoints = [Endpoint(u, cooldown_s, max_cooldown_s) for u in urls]
        self.probe = probe
        self.role = role
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.endpoints)

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.endpoints]

    def healthy(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.healthy]

    def pick(self, tried: Sequence[Endpoint] = ()) -> Endpoint | None:
        """The least-loaded healthy endpoint not in ``tried``, or None."""
        self._revive_due()
        cands = [e for e in self.endpoints if e.healthy and e not in tried]
        if not cands:
            return None
        return min(cands, key=lambda e: (e.stats.in_flight, e.stats.requests, self.endpoints.index(e)))

    # ------------------------------------------------------------------ probing

    async def _probe_one(self, ep: Endpoint) -> bool:
        ep.stats.probes += 1
        try:
            await self.probe(ep)
        except Exception as e:  # noqa: BLE001 - any failure: still down
            ep.stats.last_error = _one_line(e)[:300]
            ep.next_probe = time.monotonic() + ep.cooldown
            ep.cooldown = min(ep.cooldown * 2, ep.max_cooldown_s)
            return False
        ep.mark_up()
        return True

    async def _guarded_probe(self, ep: Endpoint) -> None:
        ep.probing = True
        try:
            await self._probe_one(ep)
        finally:
            ep.probing = False

    def _revive_due(self) -> None:
        """Start a background probe of every down endpoint whose cool-down is over."""
        now = time.monotonic()
        for ep in self.endpoints:
            if not ep.healthy and not ep.probing and ep.next_probe <= now:
                task = asyncio.get_running_loop().create_task(self._guarded_probe(ep))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def probe_down(self) -> bool:
        """Probe every down endpoint now (concurrently); whether any was taken back."""
        down = [e for e in self.endpoints if not e.healthy]
        if not down:
            return True
        ok = await asyncio.gather(*(self._probe_one(e) for e in down))
        return any(ok)

    async def aclose(self) -> None:
        """Cancel the background probes started from the running loop."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._tasks if t.get_loop() is loop]
        for t in mine:
            t.cancel()
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)

    # ------------------------------------------------------------------ routing

    async def route(self, send: Callable[[Endpoint], Awaitable[T]]) -> T:
        """Send one request with ``send(endpoint)`` by the pool's rules; its result.

        ``send`` raises ``Failover`` for a failure another endpoint may not share, anything
        else (``BackendRequestFailed`` for a request's own error) to fail the request as is.
        """
        tried: list[Endpoint] = []
        last: Failover | None = None
        probed = False
        while True:
            ep = self.pick(tried)
            if ep is None:
                if not probed and any(not e.healthy for e in self.endpoints):
                    probed = True  # confirm they are down (or take back the ones that answer)
                    await self.probe_down()
                    if self.pick(tried) is not None:
                        continue
                if not self.healthy():
                    raise EndpointsDown(self.down_message())
                # the endpoints answer, but this request failed on each one it could try
                raise BackendRequestFailed(str(last) if last else "no endpoint took the request")
            ep.stats.requests += 1
            if tried:
                ep.stats.rerouted_in += 1
            ep.stats.in_flight += 1
            try:
                result = await send(ep)
            except Skip:  # it went down while the request waited for a slot: not sent, pick again
                ep.stats.requests -= 1
                ep.stats.rerouted_in -= 1 if tried else 0
                continue
            except Failover as f:
                ep.stats.failed += 1
                ep.stats.last_error = f.reason[:300]
                if f.down:
                    ep.mark_down(f.reason)
                tried.append(ep)
                last = f
                continue
            except Exception:
                ep.stats.failed += 1
                raise
            finally:
                ep.stats.in_flight -= 1
            ep.succeeded()
            return result

    # ------------------------------------------------------------------ reporting

    def down_message(self) -> str:
        role = f"{self.role} " if self.role else ""
        n = len(self.endpoints)
        what = f"the {role}endpoint is" if n == 1 else f"all {n} {role}endpoints are"
        detail = "; ".join(f"{e.url}: {e.stats.last_error or 'down'}" for e in self.endpoints)
        return " ".join(f"{what} down ({detail}); start the server(s) and rerun with --resume".split())[:600]

    def stats(self) -> list[dict[str, Any]]:
        return [e.stats.row() for e in self.endpoints]

    def summary_lines(self) -> list[str]:
        """One line per endpoint: what a run prints at its end."""
        role = self.role or "endpoint"
        out = []
        for e in self.endpoints:
            s = e.stats
            out.append(f"{role} {s.url}: {s.requests} requests, {s.ok} ok, {s.failed} failed, "
                       f"{s.rerouted_in} retried here after failing elsewhere, {s.in_flight} in flight, "
                       f"{s.http} HTTP requests, down {s.downs}x, {'up' if s.healthy else 'DOWN'}")
        return out
