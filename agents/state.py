"""State of the teacher-loop graph (agents/graph.py), and its runtime context.

Two kinds of state travel through the graph:

- ``LoopState``: the graph's shared channels. Every channel that parallel branches write has
  an ``Annotated`` reducer (``outcomes`` and ``chains_done`` are appended to by every chain;
  STYLE.md §8: a fan-in without a reducer is the most reported LangGraph error). ``run_id``
  and ``frontier_size`` are written once, by the input and ``select_frontier``.
- ``ChainState``: one chain in flight, carried from node to node in ``Send`` payloads
  (map-reduce over the frontier's chains). It never lands in a shared channel; the chain's
  result reaches the shared state only as ``Outcome`` / ``ChainEnd`` records.
- ``ChainRunState``: the state of one chain's own subgraph (agents/graph.py ``build_chain_graph``):
  its input ``chain`` and its ``outcomes`` / ``chains_done``, which reach ``LoopState`` through
  the same reducers when the chain's subgraph returns.

Everything in state is plain JSON-able data (items travel as ``Item.to_dict()``), so the
SQLite checkpointer stores it without custom serialisers and a resumed run rebuilds exactly
the payloads that were in flight.

``LoopContext`` holds the runtime objects (pool, backends, templates, ledger); it is handed
to each run (LangGraph ``context=``) and never checkpointed.
"""

from __future__ import annotations

import operator
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

if TYPE_CHECKING:
    from teachloop.agents.backends import ChatBackend
    from teachloop.agents.budget import TokenBudget
    from teachloop.agents.config import TeacherLoopConfig
    from teachloop.agents.ledger import Ledger
    from teachloop.agents.teacher import PromptLibrary
    from teachloop.curriculum.pool import PoolStore

ItemDict = dict[str, Any]
Status = Literal["accepted", "rejected"]


class Summary(TypedDict, total=False):
    """The student's performance on one item: what the teacher is shown (METHODS.md §1)."""

    attempts: int  # M
    successes: float  # sum of rewards
    p: float | None  # pass rate, successes / attempts
    solved: list[str]  # up to k solved attempts, truncated
    failed: list[str]  # up to k failed attempts, truncated
    recorded: bool  # False when the attempts' texts are not known (measured by an earlier run)


class Rejection(TypedDict):
    stage: str  # propose / parse / execute / agreement / ... / dedup / band
    reason: str


class ChainState(TypedDict, total=False):
    """One chain in flight (a ``Send`` payload)."""

    run_id: str
    chain_id: str  # "<head id>.<k>"
    root_id: str
    family: str  # the head's family
    start_turn: int  # the frontier head's own turn (0 for a seed)
    start_id: str  # the frontier head's id (turn kind "first" while the head is still it)
    turn: int  # teacher turns played so far (the one in flight, from summarise on)
    head: ItemDict  # the newest measured variant (the frontier item at first)
    head_summary: Summary
    head_in_pool: bool  # False when the head is an out-of-band variant (in rejections)
    direction: str  # easier / harder, for the turn in flight
    last_rejection: str  # why the previous proposal of this chain was rejected ("" if none)
    exhausted: str  # set when no further proposal is possible (procedural end of range)
    seed: ItemDict  # the frontier head the chain started from (turn 1 writes from it)
    seed_summary: Summary  # its measured pass rate, shown in the first message
    head_turn: int  # the chain turn that produced ``head`` (0: the head is still the seed)
    opening: list[dict[str, str]]  # system prompt + the seed-and-rules message (set at turn 1)
    history: list[TurnRecord]  # every earlier turn of this chain: proposal and measured outcome
    rejections_in_row: int  # rejected proposals since the last measured one
    # --- the turn in flight ---------------------------------------------------------------
    slot: str  # "<run_id>/<chain_id>/<turn>": the proposal's exactly-once key
    kind: str  # llm / procedural
    teacher: str  # teacher kind and model, recorded on items
    prompt_version: str  # template name@version#hash, or procedural@1
    summary_text: str  # the rendered summary shown to the teacher
    raw: str  # the teacher's raw output (llm)
    messages: list[dict[str, str]]  # the conversation the teacher answered (llm)
    usage: Usage  # tokens and latency of the teacher's calls for this proposal
    protocol: str  # blockwise / single / structured (TeacherLoopConfig.protocol, resolved)
    proposal: dict[str, Any]  # the parsed proposal, in validate_proposal's format
    candidate: ItemDict  # the validated item (not yet probed)
    probe: Summary  # the candidate's measured pass rate
    rejection: Rejection  # set by the stage that rejected the proposal
    outcome: Outcome  # set by record


class TurnRecord(TypedDict):
    """One finished turn of a chain, as the teacher sees it on later turns (METHODS.md §1:
    the in-context performance summary): its output and what became of it."""

    turn: int
    raw: str  # the teacher's output (assistant message)
    outcome: str  # the measured outcome or the rejection reason (user message)


class Usage(TypedDict, total=False):
    """Accounting of one proposal's teacher calls."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class MeasureTask(TypedDict):
    """One frontier head and the chains that start from it (``select_frontier`` -> ``measure``)."""

    head: ItemDict
    chains: list[ChainState]


class Outcome(TypedDict, total=False):
    """What became of one proposal: an item in the pool, or a row in the rejections table."""

    slot: str
    chain_id: str
    root_id: str
    family: str  # the head's family (the item's may differ: math.rg.* -> math.word)
    turn: int  # chain-relative teacher turn (1 = first proposal of the chain)
    direction: str
    kind: str
    prompt_version: str
    status: Status
    stage: str  # "" when accepted
    reason: str
    item_id: str  # the candidate's id when one was built ("" otherwise)
    p: float | None  # the candidate's measured pass rate, when probed
    parent_id: str
    parent_p: float | None


class ChainEnd(TypedDict):
    chain_id: str
    root_id: str
    family: str
    turns: int
    reason: str  # max_turns / target reached / end of knob range / ...
    head_id: str
    head_p: float | None


class LoopState(TypedDict, total=False):
    """The graph's shared channels."""

    run_id: str  # input; the checkpointer thread id and the slot prefix
    frontier_size: int  # chains started (written once by select_frontier)
    outcomes: Annotated[list[Outcome], operator.add]  # one per proposal, from parallel chains
    chains_done: Annotated[list[ChainEnd], operator.add]  # one per chain, from parallel chains


class ChainRunInput(TypedDict):
    """Input of one chain's subgraph: the chain as ``measure`` started it."""

    chain: ChainState


class ChainRunOutput(TypedDict, total=False):
    """What one chain's subgraph hands back to the loop (added by ``LoopState``'s reducers)."""

    outcomes: Annotated[list[Outcome], operator.add]
    chains_done: Annotated[list[ChainEnd], operator.add]


class ChainRunState(ChainRunInput, ChainRunOutput, total=False):
    """The channels of one chain's subgraph (one task per superstep: the chain's own)."""


@dataclass
class LoopContext:
    """Runtime dependencies of the nodes (LangGraph ``context``; never checkpointed)."""

    config: TeacherLoopConfig
    store: PoolStore
    ledger: Ledger
    student: ChatBackend
    teacher: ChatBackend | None = None  # needed only when some family uses the llm teacher
    teacher_name: str = "llm"  # recorded on items: "llm:<backend>:<model>"
    prompts: PromptLibrary | None = None
    visits: dict[str, int] = field(default_factory=dict)  # node -> calls (tests, benchmarks)
    # item id -> (completion texts, rewards, ...) of recent student attempts made elsewhere
    # (the trainer's rollouts in online mode): ``measure`` summarises these instead of probing
    rollouts: dict[str, tuple[Any, ...]] | None = None
    budget: TokenBudget | None = None  # teacher.budget_tokens (agents/budget.py); None: unlimited
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def visit(self, node: str) -> None:
        with self._lock:  # sync nodes run in worker threads
            self.visits[node] = self.visits.get(node, 0) + 1
