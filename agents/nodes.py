"""Nodes of the teacher loop: small functions, each returning a ``Command`` whose type names
the edges it may take (STYLE.md §8). Wiring: agents/graph.py.

A chain moves through the graph as a ``Send`` payload (``ChainState``), inside its own
subgraph (``chain``: ``begin -> route -> ...``; agents/graph.py), so it advances on its own::

    select_frontier -> measure -> [chain] route -> summarise -> propose -> parse -> validate
                                    ^                      |  (procedural) |        |
                                    |                      +---> dedup <---+--------+
                                    |                              |
                                    +------- record <--- probe <---+
                                    (any stage that rejects goes straight to record)

Sancaktar et al. (METHODS.md §1), and where teachloop departs:
- One proposal per chain per turn; an invalid or duplicate proposal costs its turn and the
  next turn retries from the same head, told why the last one was rejected.
- The newest *measured* variant becomes the head even when it is out of the keep band (it
  is then in the rejections table, not the pool: its child's parent is not in the pool, and
  the child says so in ``metadata["parent_in_pool"]``).
- The llm teacher holds one conversation per chain (agents/conversation.py): each later turn
  sees its earlier proposals (assistant) and their measured outcomes or rejection reasons
  (user), then the progression rule, within ``context_tokens``.
- Turn 1 always writes from the seed. After it, a measured variant inside the medium band
  (target_min_p <= p <= target_max_p, 0.35-0.65) ends the chain (``in_band = "stop"``);
  between p = 0 and the band the teacher is asked for easier variants (the paper only gives
  the rule at the two ends). ``max_rejections_in_row`` rejected proposals in a row end it too.
- A request that fails after its retries (``BackendError``) is a rejection at stage
  ``backend``; the chain goes on. A head that cannot be measured ends its chains.
- ``item.turn`` is the teacher turn that produced the item (frontier head's turn + chain
  turn), not its depth in the lineage.
"""

from __future__ import annotations

import dataclasses
import time
from random import Random
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command, Send, interrupt

from teachloop.agents.backends import MAX_STOP, BackendError, Completion, OpenAIBackend, _truncate_at_stop
from teachloop.agents.budget import BUDGET_REASON
from teachloop.agents.config import TeacherLoopConfig
from teachloop.agents.conversation import build_conversation
from teachloop.agents.probe import aprobe
from teachloop.agents.state import (
    ChainEnd,
    ChainRunState,
    ChainState,
    LoopContext,
    LoopState,
    MeasureTask,
    Outcome,
    Summary,
    TurnRecord,
    Usage,
)
from teachloop.agents.summary import render_rule, render_summary, render_turn_outcome, stats_only, summarise_attempts
from teachloop.agents.teacher import (
    PROCEDURAL_VERSION,
    FormatBlock,
    format_blocks,
    parse_proposal,
    proposal_schema,
    structured_to_tags,
    target_family,
    teacher_kind_for,
)
from teachloop.curriculum.items import Item
from teachloop.evals.families import family_names, get_family

_PER_TURN = ("slot", "kind", "teacher", "prompt_version", "summary_text", "raw", "proposal",
             "candidate", "probe", "rejection", "outcome", "messages", "usage", "protocol")


# ------------------------------------------------------------------------- pure helpers


def progression(p: float | None, cfg: TeacherLoopConfig) -> str | None:
    """The progression rule: harder if p > harder_above, easier if p <= easier_at, None inside
    the medium band [target_min_p, target_max_p], else towards the band (easier below it,
    harder above it). METHODS.md §1: harder if p > 0.65, easier if p = 0, aiming at
    0.35 <= p <= 0.65 (teachloop: the paper gives no rule for 0 < p < 0.35; easier)."""
    if p is None:
        return None
    if p > cfg.harder_above:
        return "harder"
    if p <= cfg.easier_at:
        return "easier"
    if cfg.target_min_p <= p <= cfg.target_max_p:
        return None
    return "easier" if p < cfg.target_min_p else "harder"


def stone_tier(p: float) -> str:
    """Stepping-stone label of a variant by its pass rate (target band 0.35-0.65 = medium)."""
    return "hard" if p < 0.35 else "medium" if p <= 0.65 else "easy"


def decide(chain: ChainState, cfg: TeacherLoopConfig) -> tuple[str | None, str]:
    """(direction of the next turn, "") or (None, why the chain stops)."""
    if chain.get("exhausted"):
        return None, chain["exhausted"]
    if chain.get("turn", 0) >= cfg.max_turns:
        return None, "max_turns"
    if cfg.max_rejections_in_row and chain.get("rejections_in_row", 0) >= cfg.max_rejections_in_row:
        return None, "repeated rejections"
    p = chain.get("head_summary", {}).get("p")
    if p is None:
        return None, "head not measured"
    if cfg.stepping_stones:
        if chain.get("turn", 0) == 0 and p > cfg.stones_max_start_p:
            return None, "not hard enough to start stepping stones"
        if p >= cfg.stones_stop_at:
            return None, "reached an easy stone"
        return "easier", ""
    if cfg.force_direction:
        return cfg.force_direction, ""
    d = progression(p, cfg)
    if d is None:
        if cfg.in_band != "stop":
            d = cfg.in_band
        elif chain.get("head_turn", 0) == 0:
            # turn 1 always writes from the seed (METHODS.md §1), also from one already in the
            # band; teachloop: a little harder then
            d = "harder"
        else:
            return None, "target reached"
    return d, ""


def _abs_turn(chain: ChainState) -> int:
    return chain.get("start_turn", 0) + chain["turn"]


def _to(node: str, chain: ChainState, **changes: Any) -> Command:
    return Command(goto=Send(node, {**chain, **changes}))


def _reject(chain: ChainState, stage: str, reason: str, **changes: Any) -> Command:
    return _to("record", chain, rejection={"stage": stage, "reason": reason}, **changes)


# ------------------------------------------------------------------------- nodes


def select_frontier(state: LoopState, runtime: Runtime[LoopContext]) -> Command[Literal["measure"]]:
    """Chain heads from the pool (oldest first), one ``measure`` task per head."""
    ctx = runtime.context
    ctx.visit("select_frontier")
    cfg = ctx.config
    if cfg.head_ids:  # explicit heads (online rounds), in the given order
        heads = [h for h in (ctx.store.get(i) for i in cfg.head_ids) if h is not None]
    else:
        heads = ctx.store.query(direction="seed" if cfg.frontier == "seeds" else None)
    wanted = set(cfg.families or family_names()) & set(family_names())
    heads = [h for h in heads if h.family in wanted]
    if cfg.max_frontier:
        heads = heads[: cfg.max_frontier]
    sends = []
    for h in heads:
        chains = [
            ChainState(run_id=state["run_id"], chain_id=f"{h.id}.{k}", root_id=h.root_id or h.id,
                       family=h.family, start_turn=h.turn, turn=0, head_in_pool=True,
                       last_rejection="", exhausted="")
            for k in range(cfg.chains_per_item)
        ]
        sends.append(Send("measure", MeasureTask(head=h.to_dict(), chains=chains)))
    n = len(heads) * cfg.chains_per_item
    return Command(update={"frontier_size": n}, goto=sends)


async def measure(task: MeasureTask, runtime: Runtime[LoopContext]) -> Command[Literal["chain"]]:
    """The head's pass rate: from the pool when measured, else M student attempts (recorded);
    then each of its chains starts in its own subgraph (``chain``), which advances on its own.

    Once per head (not per chain), so chains sharing a head do not probe it twice; a re-run
    after a kill finds the recorded stats and does not add them again.
    """
    chains = await _measure(task, runtime)
    return Command(goto=[Send("chain", {"chain": c}) for c in chains])


async def measure_lockstep(task: MeasureTask, runtime: Runtime[LoopContext]) -> Command[Literal["route"]]:
    """``measure`` for the lock-step graph (``build_graph(lockstep=True)``, the design before
    issue 14, kept as the benchmark's baseline): every chain's node runs in the loop's own
    supersteps, so each superstep waits for the slowest chain."""
    chains = await _measure(task, runtime)
    return Command(goto=[Send("route", c) for c in chains])


def begin(state: ChainRunState, runtime: Runtime[LoopContext]) -> Command[Literal["route"]]:
    """Entry of one chain's subgraph: its chain (the input) goes to ``route``."""
    return Command(goto=Send("route", state["chain"]))


async def _measure(task: MeasureTask, runtime: Runtime[LoopContext]) -> list[ChainState]:
    """The chains of one head, each with the head's measured summary (see ``measure``)."""
    ctx = runtime.context
    ctx.visit("measure")
    cfg = ctx.config
    head = Item.from_dict(task["head"])
    current = ctx.store.get(head.id) or head
    if ctx.rollouts and head.id in ctx.rollouts:  # the trainer's rollouts: no extra probing
        texts, rewards = ctx.rollouts[head.id][:2]
        summary = summarise_attempts(list(texts), list(rewards), k=cfg.summary_examples,
                                     max_chars=cfg.summary_chars)
    elif current.attempts > 0:
        summary = stats_only(current.attempts, current.successes)
    else:
        fam = get_family(head.family)
        try:
            res = (await aprobe([head], cfg.attempts, ctx.student, fam.score,
                                temperature=cfg.student_temperature, max_tokens=cfg.student_max_tokens,
                                score_workers=cfg.score_workers, fewshot=cfg.student_fewshot))[0]
        except BackendError as e:  # the head cannot be measured: its chains end, the run goes on
            why = f"backend: student request failed: {e}"[:300]
            return [ChainState(**{**c, "head": task["head"], "head_summary": {}, "start_id": head.id,
                                  "exhausted": why}) for c in task["chains"]]
        summary = summarise_attempts(res.completions, res.rewards, k=cfg.summary_examples,
                                     max_chars=cfg.summary_chars)
        ctx.store.record_many([(head.id, res.attempts, float(sum(res.rewards)))])
        current = ctx.store.get(head.id) or head
    head_d = current.to_dict()
    return [ChainState(**{**c, "head": head_d, "head_summary": summary, "start_id": head.id,
                          "seed": head_d, "seed_summary": summary, "head_turn": 0,
                          "history": [], "rejections_in_row": 0})
            for c in task["chains"]]


def route(chain: ChainState, runtime: Runtime[LoopContext]) -> Command[Literal["summarise", "__end__"]]:
    """Another turn on the newest variant (direction by the progression rule), or stop; before
    an llm turn with the token budget spent (agents/budget.py), pause (interrupt) or end."""
    ctx = runtime.context
    ctx.visit("route")
    direction, why = decide(chain, ctx.config)
    if direction is not None and _over_budget(ctx, chain):
        if ctx.budget.pause:  # waits here; ``--resume`` with a larger budget goes on
            interrupt({"reason": BUDGET_REASON, "chain_id": chain["chain_id"]})
        else:
            direction, why = None, BUDGET_REASON
    if direction is None:
        head = chain.get("head", {})
        end = ChainEnd(chain_id=chain["chain_id"], root_id=chain["root_id"], family=chain["family"],
                       turns=chain.get("turn", 0), reason=why, head_id=head.get("id", ""),
                       head_p=chain.get("head_summary", {}).get("p"))
        return Command(update={"chains_done": [end]})
    t = chain.get("turn", 0) + 1
    nxt = {k: v for k, v in chain.items() if k not in _PER_TURN}
    nxt.update(turn=t, direction=direction, slot=f"{chain['run_id']}/{chain['chain_id']}/{t}")
    return Command(goto=Send("summarise", nxt))


def _over_budget(ctx: LoopContext, chain: ChainState) -> bool:
    """The token budget is spent and the chain's next turn would call the llm teacher (a
    procedural turn costs no tokens and goes on). Counted once per stopped chain."""
    b = ctx.budget
    if b is None or not b.exhausted():
        return False
    if teacher_kind_for(chain["family"], ctx.config.kind, get_family(chain["family"]).supports_variants) != "llm":
        return False
    b.stop()
    return True


def summarise(chain: ChainState, runtime: Runtime[LoopContext]) -> Command[Literal["propose"]]:
    """The performance summary the teacher reads: p over M, solved/failed attempts, direction."""
    ctx = runtime.context
    ctx.visit("summarise")
    text = render_summary(chain.get("head_summary", {}), direction=chain["direction"],
                          last_rejection=chain.get("last_rejection", ""))
    return _to("propose", chain, summary_text=text)


async def propose(chain: ChainState, runtime: Runtime[LoopContext]
                  ) -> Command[Literal["parse", "dedup", "record"]]:
    """One proposal: the llm teacher renders its template and samples; the procedural teacher
    moves a difficulty knob of the family's generator."""
    ctx = runtime.context
    ctx.visit("propose")
    cfg = ctx.config
    fam = get_family(chain["family"])
    kind = teacher_kind_for(chain["family"], cfg.kind, fam.supports_variants)
    head = Item.from_dict(chain["head"])
    direction = chain["direction"]
    if kind == "procedural":
        common = dict(kind=kind, teacher="procedural", prompt_version=PROCEDURAL_VERSION)
        if not fam.supports_variants:
            return _reject(chain, "propose", f"{fam.name} has no procedural variants (use the llm teacher)",
                           exhausted="no procedural variants", **common)
        try:
            child = fam.variant(head, direction, Random(f"{cfg.seed}/{chain['slot']}"))
        except Exception as e:  # noqa: BLE001 - a generator bug costs this proposal, not the run
            return _reject(chain, "propose", f"procedural variant failed: {type(e).__name__}: {e}"[:300],
                           **common)
        if child is None:
            why = f"no {direction} procedural variant: end of the knob range"
            return _reject(chain, "propose", why, exhausted="end of knob range", **common)
        child = dataclasses.replace(child, turn=_abs_turn(chain), prompt_version=PROCEDURAL_VERSION)
        return _to("dedup", chain, candidate=child.to_dict(), **common)
    if ctx.teacher is None or ctx.prompts is None:
        raise RuntimeError("the llm teacher needs a teacher backend and prompts in the LoopContext")
    messages, version, changes = _conversation(ctx, chain)
    usage = Usage(calls=0, prompt_tokens=0, completion_tokens=0, latency_s=0.0)
    t0 = time.perf_counter()
    protocol = resolve_protocol(cfg, ctx.teacher)
    blocks = format_blocks(chain["family"])
    if protocol == "structured":
        messages = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"].rstrip()
                                     + "\n\n" + STRUCTURED_NOTE}]
    common = dict(kind=kind, teacher=ctx.teacher_name, prompt_version=version, messages=messages,
                  usage=usage, protocol=protocol, **changes)
    try:
        if protocol == "structured":
            if not isinstance(getattr(ctx.teacher, "inner", ctx.teacher), OpenAIBackend):
                raise RuntimeError("teacher.protocol=structured needs an OpenAI-compatible teacher endpoint")
            out = await ctx.teacher.agenerate([messages], n=1, temperature=cfg.teacher_temperature,
                                              max_tokens=cfg.teacher_max_tokens,
                                              response_format=proposal_schema(chain["family"]))
            _count(usage, out[0][0], ctx)
            raw = out[0][0].text
        elif protocol == "blockwise" and blocks:
            raw = await _propose_blockwise(ctx, messages, blocks, usage)
        else:
            turn_kind = "first" if not chain.get("history") else direction
            pre = ctx.prompts.prefill(head, turn_kind) if cfg.prefill else ""
            sent = [*messages, {"role": "assistant", "content": pre}] if pre else messages
            out = await ctx.teacher.agenerate([sent], n=1, temperature=cfg.teacher_temperature,
                                              max_tokens=cfg.teacher_max_tokens)
            c = out[0][0]
            _count(usage, c, ctx)
            text = c.text
            # a continuation lacks the prefilled opening tag; a server that cannot continue a
            # message answers anew (with its own opening tag): keep that text as it is
            raw = pre + text if pre and pre not in text else text
    except BackendError as e:  # failed after its retries: a recorded rejection, the chain goes on
        usage["latency_s"] = round(time.perf_counter() - t0, 4)
        return _reject(chain, "backend", f"teacher request failed: {e}"[:300], raw="", **common)
    usage["latency_s"] = round(time.perf_counter() - t0, 4)
    return _to("parse", chain, raw=raw, **common)


STRUCTURED_NOTE = ("Answer with one JSON object whose fields are the blocks of the format above "
                   "(for inputs: a list of strings).")


def resolve_protocol(cfg: TeacherLoopConfig, teacher: Any) -> str:
    """TeacherLoopConfig.protocol with ``auto`` resolved: blockwise for in-process models and
    endpoints that can continue a message (a local tokenizer renders the prompt), single for
    other endpoints; ``blockwise=False`` turns auto into single."""
    if cfg.protocol != "auto":
        return cfg.protocol
    if not cfg.blockwise:
        return "single"
    inner = getattr(teacher, "inner", teacher)
    if isinstance(inner, OpenAIBackend):
        return "blockwise" if inner.config.tokenizer else "single"
    return "blockwise"


def _conversation(ctx: LoopContext, chain: ChainState) -> tuple[list[dict[str, str]], str, dict[str, Any]]:
    """(messages, prompt version, chain changes) of this turn's teacher call: the chain's one
    conversation (agents/conversation.py). Turn 1 renders the opening from the seed (the
    ``first`` template); later turns add every earlier proposal and its outcome, the newest
    outcome followed by the progression rule (the ``easier``/``harder`` template)."""
    cfg = ctx.config
    changes: dict[str, Any] = {}
    opening = chain.get("opening")
    history = list(chain.get("history") or [])
    seed = Item.from_dict(chain.get("seed") or chain["head"])
    if not opening:
        opening, version = ctx.prompts.render(seed, "first", summary=chain["summary_text"],
                                              direction=chain["direction"])
        changes["opening"] = opening
    if not history:
        version = ctx.prompts.template(target_family(chain["family"]), "first").version
        messages, _ = build_conversation(opening, [], "", budget=cfg.context_tokens)
        return messages, version, changes
    ht = chain.get("head_turn", 0)
    target = ("the seed problem from the first message (write a new problem from it)" if ht == 0
              else f"your problem of turn {ht}")
    rule = render_rule(chain["direction"], target_min=cfg.target_min_p, target_max=cfg.target_max_p)
    last = history[-1]
    user, version = ctx.prompts.follow_up(chain["family"], chain["direction"], outcome=last["outcome"],
                                          rule=rule, target=target)
    history[-1] = TurnRecord(turn=last["turn"], raw=last["raw"], outcome=user)
    messages, _ = build_conversation(opening, history, "", budget=cfg.context_tokens)
    return messages, version, changes


def _count(usage: Usage, c: Completion, ctx: LoopContext | None = None) -> None:
    if ctx is not None and ctx.budget is not None:
        ctx.budget.add(c.prompt_tokens + c.completion_tokens)
    usage["calls"] = usage.get("calls", 0) + 1
    usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + c.prompt_tokens
    usage["completion_tokens"] = usage.get("completion_tokens", 0) + c.completion_tokens


async def _propose_blockwise(ctx: LoopContext, messages: list[dict[str, str]],
                             blocks: tuple[FormatBlock, ...], usage: Usage) -> str:
    """Guided decoding by blocks (TeacherLoopConfig.blockwise; teachloop.agents.teacher.FORMAT_BLOCKS):
    the loop writes each opening tag, the teacher continues the assistant message and is
    stopped at the closing tag, at the next block's opening tag or at the block's own stops
    (at most MAX_STOP strings leave the process: OpenAI's limit), and its text is cut here at
    any other tag of the format (the block ends there); one call per block, each within its
    token cap and the shared teacher_max_tokens budget. A block that runs out of tokens ends
    the text there, unclosed, so the parser rejects it as truncated (a one-line block keeps
    its first complete line)."""
    cfg = ctx.config
    tags = sorted({t for b in blocks for t in (b.opening.strip(), b.closing)})
    text, budget = "", cfg.teacher_max_tokens
    for i, b in enumerate(blocks):
        if budget <= 0:
            break
        text += b.opening
        nxt = blocks[i + 1].opening.strip() if i + 1 < len(blocks) else blocks[0].opening.strip()
        stop = list(dict.fromkeys([b.closing, nxt, *b.stops]))[:MAX_STOP]
        out = await ctx.teacher.agenerate(
            [[*messages, {"role": "assistant", "content": text}]], n=1,
            temperature=cfg.teacher_temperature, max_tokens=min(b.max_tokens, budget), stop=stop)
        c = out[0][0]
        _count(usage, c, ctx)
        budget -= max(1, c.completion_tokens)
        got, cut = _truncate_at_stop(c.text, tags)  # any other tag of the format ends the block
        body, closed = got.strip("\n"), cut or c.finish_reason == "stop"
        if b.one_line and body:
            lines = body.split("\n")
            body, closed = lines[0].strip(), closed or len(lines) > 1
        if not closed:
            text += c.text  # out of tokens inside the block: leave it unclosed
            break
        text += body + ("\n" if b.opening.endswith("\n") else "") + b.closing
    return text


def parse(chain: ChainState, runtime: Runtime[LoopContext]) -> Command[Literal["validate", "record"]]:
    """Strict parse of the teacher's output (teachloop.agents.teacher.parse_proposal)."""
    runtime.context.visit("parse")
    raw = chain.get("raw", "")
    if chain.get("protocol") == "structured":
        raw = structured_to_tags(chain["family"], raw)
        if not isinstance(raw, str):
            return _reject(chain, "parse", raw.reason)
    r = parse_proposal(target_family(chain["family"]), raw)
    if not r.ok:
        return _reject(chain, "parse", r.reason)
    return _to("validate", chain, proposal=r.to_family_dict())


def validate(chain: ChainState, runtime: Runtime[LoopContext]) -> Command[Literal["dedup", "record"]]:
    """The family's checks: gold by sandboxed execution (twice), answers cross-checked."""
    runtime.context.visit("validate")
    fam = get_family(target_family(chain["family"]))
    res = fam.validate_proposal(chain["proposal"], parent=Item.from_dict(chain["head"]),
                                direction=chain["direction"], teacher=chain["teacher"],
                                prompt_version=chain["prompt_version"])
    if not res.ok:
        return _reject(chain, res.stage or "validate", res.reason or "rejected by the family")
    item = dataclasses.replace(res.item, turn=_abs_turn(chain))
    return _to("dedup", chain, candidate=item.to_dict())


def dedup(chain: ChainState, runtime: Runtime[LoopContext]) -> Command[Literal["probe", "record"]]:
    """Exact and near-duplicate removal against the pool (agents/dedup.py) and against the
    candidates other chains already took to probing, before probing."""
    ctx = runtime.context
    ctx.visit("dedup")
    dup = ctx.ledger.claim(chain["slot"], Item.from_dict(chain["candidate"]))
    if dup is not None:
        return _reject(chain, "dedup", dup[1])
    return _to("probe", chain)


async def probe(chain: ChainState, runtime: Runtime[LoopContext]) -> Command[Literal["record"]]:
    """M student attempts at the candidate (batched across chains by the backend)."""
    ctx = runtime.context
    ctx.visit("probe")
    cfg = ctx.config
    item = Item.from_dict(chain["candidate"])
    fam = get_family(item.family)
    try:
        res = (await aprobe([item], cfg.attempts, ctx.student, fam.score,
                            temperature=cfg.student_temperature, max_tokens=cfg.student_max_tokens,
                                score_workers=cfg.score_workers, fewshot=cfg.student_fewshot))[0]
    except BackendError as e:  # failed after its retries: a recorded rejection, the chain goes on
        return _reject(chain, "backend", f"student request failed: {e}"[:300])
    summary = summarise_attempts(res.completions, res.rewards, k=cfg.summary_examples,
                                 max_chars=cfg.summary_chars)
    return _to("record", chain, probe=summary)


def _provenance(chain: ChainState) -> dict[str, Any]:
    """The teacher's side of one proposal (llm): the messages it answered, its raw output,
    tokens and latency; empty for the procedural teacher."""
    if "messages" not in chain:
        return {}
    return {"teacher_messages": chain["messages"], "teacher_output": chain.get("raw", ""),
            "teacher_usage": dict(chain.get("usage") or {})}


def record(chain: ChainState, runtime: Runtime[LoopContext]) -> Command[Literal["route"]]:
    """Keep (pool) when keep_min_p <= p <= keep_max_p, else reject ("out of band"); every
    earlier rejection is written here too. Exactly once per slot (agents/ledger.py)."""
    ctx = runtime.context
    ctx.visit("record")
    cfg = ctx.config
    slot, head = chain["slot"], chain["head"]
    rej = chain.get("rejection")
    cand = Item.from_dict(chain["candidate"]) if chain.get("candidate") else None
    new_head: Item | None = None
    in_pool = False
    p: float | None = None
    if rej is None and cand is not None:
        pr: Summary = chain["probe"]
        p = pr["p"]
        cand.attempts, cand.successes = pr["attempts"], pr["successes"]
        cand.p, cand.difficulty = p, (None if p is None else 1.0 - p)
        cand.validation = {**cand.validation, "probe": {
            "attempts": pr["attempts"], "p": p, "solved": pr.get("solved", []), "failed": pr.get("failed", [])}}
        cand.metadata = {**cand.metadata, "teacher_kind": chain["kind"], "chain_id": chain["chain_id"],
                         "parent_in_pool": chain.get("head_in_pool", True), "parent_p": head.get("p"),
                         **_provenance(chain)}
        if cfg.stepping_stones and p is not None:
            cand.metadata["stone"] = stone_tier(p)
        if p is not None and cfg.keep_min_p <= p <= cfg.keep_max_p:
            rec = ctx.ledger.accept(slot, cand)
        else:
            bound = (f"< keep_min_p {cfg.keep_min_p}" if p is None or p < cfg.keep_min_p
                     else f"> keep_max_p {cfg.keep_max_p}")
            rec = ctx.ledger.reject(slot, "band", f"out of band: p = {p if p is None else round(p, 3)} {bound}", item=cand,
                                    family=cand.family, parent_id=head["id"], direction=chain["direction"],
                                    turn=_abs_turn(chain), teacher=chain["teacher"],
                                    prompt_version=chain["prompt_version"])
        if rec.status == "accepted" or rec.stage == "band":
            new_head, in_pool = cand, rec.status == "accepted"
            if in_pool and rec.item_id != cand.id:  # a replayed slot: the pool's item is the truth
                new_head = ctx.store.get(rec.item_id) or cand
    else:
        rej = rej or {"stage": "internal", "reason": "no candidate and no rejection"}
        prov = _provenance(chain)
        prov.pop("teacher_output", None)  # stored as the envelope's "raw"
        rec = ctx.ledger.reject(slot, rej["stage"], rej["reason"], item=cand, raw=chain.get("raw", ""),
                                proposal=chain.get("proposal"), family=target_family(chain["family"]),
                                parent_id=head["id"], direction=chain["direction"], turn=_abs_turn(chain),
                                teacher=chain.get("teacher", ""), prompt_version=chain.get("prompt_version", ""),
                                **prov)
    outcome = Outcome(slot=slot, chain_id=chain["chain_id"], root_id=chain["root_id"], family=chain["family"],
                      turn=chain["turn"], direction=chain["direction"], kind=chain.get("kind", ""),
                      prompt_version=chain.get("prompt_version", ""), status=rec.status,
                      stage=rec.stage, reason=rec.reason, item_id=cand.id if cand is not None else "",
                      p=p, parent_id=head["id"], parent_p=chain.get("head_summary", {}).get("p"))
    nxt: dict[str, Any] = {"outcome": outcome}
    if new_head is not None:
        nxt.update(head=new_head.to_dict(), head_summary=chain["probe"], head_in_pool=in_pool,
                   last_rejection="", head_turn=chain["turn"], rejections_in_row=0)
        said = render_turn_outcome(chain["turn"], summary=chain["probe"], kept=in_pool)
    else:
        nxt["last_rejection"] = f"{rec.stage}: {rec.reason}"
        nxt["rejections_in_row"] = chain.get("rejections_in_row", 0) + 1
        said = render_turn_outcome(chain["turn"], stage=rec.stage, reason=rec.reason)
    nxt["history"] = [*chain.get("history", []), TurnRecord(turn=chain["turn"], raw=chain.get("raw", ""),
                                                            outcome=said)]
    return Command(update={"outcomes": [outcome]}, goto=Send("route", {**chain, **nxt}))
