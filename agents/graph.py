"""The teacher loop as LangGraph ``StateGraph``s, assembled in one place.

Sancaktar et al. (arXiv 2603.24202; METHODS.md §1): a teacher that is never fine-tuned
rewrites problems turn after turn from what the student actually did. ``select_frontier``
fans out with ``Send`` (map) to one ``measure`` task per head; each head's chains then run in
their own subgraph (``chain``, one per chain, all in one superstep of the loop), whose nodes
hand the chain's ``ChainState`` on with ``Send``; chains meet again only in the reducer
channels ``outcomes`` / ``chains_done`` (reduce) when their subgraphs return.

Chains advance independently (issue 14): a superstep of a chain's subgraph holds only that
chain's node, so a chain whose teacher call is slow holds no other chain back. The heads are
still measured together (the loop's second superstep: one batch of probes), so all chains
start together; from then on each goes at its own pace. Before, every chain node ran in the
loop's own supersteps (``build_graph(lockstep=True)``, kept as the
benchmark's baseline), and each superstep waited for the slowest chain. Model calls of chains
in flight still meet in the backend (``agents/batching.CoalescingBackend`` turns concurrent
local calls into one batch).

Checkpointing: compile with a checkpointer (``AsyncSqliteSaver`` in RUN_DIR for
``teachloop generate``, opened with agents/checkpoint.py ``sqlite_saver``, which does not close
it under a dying run's orphaned writes; thread id = the run id; ``durability="sync"``). LangGraph saves each
superstep before starting the next, and the writes of every finished task; a chain's subgraph
inherits the checkpointer and the durability and saves its own supersteps under its task's
namespace. After a kill the resumed run re-executes only the loop's tasks that had not
finished, with the same inputs, and each unfinished chain's subgraph resumes from its own last
superstep; pool writes happen only in ``record`` and are exactly-once per proposal slot
(agents/ledger.py). Together: nothing lost, nothing twice.

``run_loop`` is the one entry point used by teachloop/generate.py, tests and benchmarks.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from langgraph.graph import START, StateGraph
from langgraph.types import Command

from teachloop.agents import nodes
from teachloop.agents.state import ChainRunInput, ChainRunOutput, ChainRunState, LoopContext, LoopState

NODES_PER_TURN = 8  # route summarise propose parse validate dedup probe record


CHAIN_NODES = ("route", "summarise", "propose", "parse", "validate", "dedup", "probe", "record")


def _add_chain_nodes(g: StateGraph) -> None:
    # progression rule: next direction on the newest variant, or stop (max_turns, in band)
    g.add_node("route", nodes.route)
    # performance summary for the teacher: p, solved/failed attempts, direction
    g.add_node("summarise", nodes.summarise)
    # teacher: llm template + backend, or a procedural knob move
    g.add_node("propose", nodes.propose)
    # strict parse of the teacher output (never raises; reason on failure)
    g.add_node("parse", nodes.parse)
    # the family's executed checks (sandbox, math-verify)
    g.add_node("validate", nodes.validate)
    # exact + near-duplicate removal against the pool
    g.add_node("dedup", nodes.dedup)
    # M student attempts at the candidate
    g.add_node("probe", nodes.probe)
    # keep in band -> pool, else rejections; exactly once per slot; back to route
    g.add_node("record", nodes.record)


def build_chain_graph() -> Any:
    """One chain's subgraph: ``begin`` hands the input chain to ``route``, then the chain's turns
    (compiled without a checkpointer: it inherits the loop's)."""
    g = StateGraph(ChainRunState, context_schema=LoopContext, input_schema=ChainRunInput,
                   output_schema=ChainRunOutput)
    g.add_node("begin", nodes.begin)
    _add_chain_nodes(g)
    g.add_edge(START, "begin")
    return g.compile()


def build_graph(checkpointer: Any = None, *, lockstep: bool = False) -> Any:
    """A fresh compiled teacher-loop graph (edges come from the nodes' ``Command`` types).

    ``lockstep=True``: the design before issue 14 (every chain node in the loop's own
    supersteps), kept only as the baseline of benchmarks/bench_teacher.py ``--only chains``.
    """
    g = StateGraph(LoopState, context_schema=LoopContext)
    # chain heads from pool stats -> one measure task per head (Send fan-out)
    g.add_node("select_frontier", nodes.select_frontier)
    # pass rate of each head: pool stats, or M batched student attempts
    if lockstep:
        g.add_node("measure", nodes.measure_lockstep)
        _add_chain_nodes(g)
    else:
        g.add_node("measure", nodes.measure)
        # each chain in its own subgraph: it advances on its own
        g.add_node("chain", build_chain_graph())
    g.add_edge(START, "select_frontier")
    return g.compile(checkpointer=checkpointer)


def recursion_limit(max_turns: int) -> int:
    """Supersteps a run may take: each chain takes one node per superstep (in its subgraph,
    which inherits the limit)."""
    return NODES_PER_TURN * (max_turns + 1) + 10


async def run_loop(
    ctx: LoopContext,
    run_id: str,
    *,
    checkpointer: Any = None,
    on_update: Callable[[str, dict[str, Any]], None] | None = None,
    lockstep: bool = False,
) -> dict[str, Any]:
    """Run (or, when the checkpointer holds the thread ``run_id``, resume) the loop; returns
    the final shared state (``outcomes``, ``chains_done``, ``frontier_size``, ``run_id``), and
    ``paused``: the chains waiting at a spent ``ctx.budget`` (agents/budget.py), when any. A
    resume lets them go on when the budget allows (it was raised), else returns at once.

    ``on_update(node, update)`` is called for every node update (progress displays), the
    nodes of the chains' subgraphs included (a chain subgraph's own return is not repeated).
    ``lockstep``: the baseline graph (see ``build_graph``).
    """
    graph = build_graph(checkpointer, lockstep=lockstep)
    config: dict[str, Any] = {"configurable": {"thread_id": run_id},
                              "recursion_limit": recursion_limit(ctx.config.max_turns)}
    inp: Any = {"run_id": run_id}
    if ctx.budget is not None:  # a spent budget pauses chains in an interrupt only when it can wait
        ctx.budget.pause = checkpointer is not None
    if checkpointer is not None:
        snap = await graph.aget_state(config)
        if snap.values.get("run_id") == run_id:
            inp = None  # resume: continue from the last checkpoint (no-op when finished)
            if snap.interrupts:  # chains paused at the token budget (agents/budget.py)
                if ctx.budget is not None and ctx.budget.exhausted():
                    return await loop_state(graph, config)  # still spent: nothing to do
                inp = Command(resume={i.id: True for i in snap.interrupts})
    final: dict[str, Any] = {}
    # durability="sync": superstep k is on disk before superstep k+1 starts, so a kill can never
    # leave the pool ahead of the checkpoint by more than the tasks of one superstep, whose
    # re-run has the very same inputs (the default "async" would let a lost checkpoint re-run
    # a probe whose record had already reached the pool); the chains' subgraphs inherit it
    durability = {"durability": "sync"} if checkpointer is not None else {}  # (1.2 fails without one)
    stream = graph.astream(inp, config, context=ctx, stream_mode=["updates", "values"], subgraphs=True,
                           **durability)
    async for ns, mode, chunk in stream:
        if mode == "values":
            if not ns:
                final = chunk
        elif on_update is not None:
            for node, update in chunk.items():
                if (not ns and node == "chain") or node == "__interrupt__":
                    continue  # a chain's subgraph returned (its nodes were reported already),
                    # or a chain paused at the token budget (not a node update)
                on_update(node, update or {})
    if checkpointer is not None:
        return await loop_state(graph, config)
    return dict(final)


async def loop_state(graph: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The loop's checkpointed state; while chains are paused at the token budget (interrupts
    pending), their subgraphs' ``outcomes`` and ``chains_done`` so far are added (they reach
    the loop's channels only when a subgraph returns) and ``paused`` counts them."""
    snap = await graph.aget_state(config, subgraphs=True)
    state = dict(snap.values)
    if not snap.interrupts:
        return state
    for t in snap.tasks:
        sub = t.state
        if t.interrupts and sub is not None and hasattr(sub, "values"):
            for key in ("outcomes", "chains_done"):
                state[key] = [*state.get(key, []), *sub.values.get(key, [])]
    state["paused"] = len(snap.interrupts)
    return state


def _reason_key(reason: str) -> str:
    r = re.sub(r"\b[0-9a-f]{16}\b", "<id>", reason)
    r = re.sub(r"jaccard [0-9.]+", "jaccard …", r)
    return r[:90]


def summarise_outcomes(state: dict[str, Any]) -> dict[str, Any]:
    """Counts for the report from the loop's final state."""
    outs = state.get("outcomes", [])
    by_turn: dict[tuple[int, str], dict[str, int]] = {}
    for o in outs:
        row = by_turn.setdefault((o["turn"], o["direction"]), {"proposed": 0, "accepted": 0, "rejected": 0})
        row["proposed"] += 1
        row[o["status"]] += 1
    reasons = Counter((o["stage"], _reason_key(o["reason"])) for o in outs if o["status"] == "rejected")
    ends = Counter(e["reason"] for e in state.get("chains_done", []))
    return {
        "by_turn": dict(sorted(by_turn.items())),
        "reasons": dict(reasons.most_common()),
        "chain_ends": dict(ends.most_common()),
        "accepted": sum(1 for o in outs if o["status"] == "accepted"),
        "rejected": sum(1 for o in outs if o["status"] == "rejected"),
        "pass_rates": [o["p"] for o in outs if o["status"] == "accepted" and o.get("p") is not None],
    }
