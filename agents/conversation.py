"""The teacher's conversation of one chain, bounded by a token budget.

Sancaktar et al. (arXiv 2603.24202; METHODS.md §1): the teacher improves its problem over
multiple turns from an in-context performance summary. teachloop keeps one real chat per
chain (DESIGN.md, "The teacher's conversation and its endpoints")::

    system      the teacher's role
    user        the rules, the seed, how the student did on it, the first request, the format
    assistant   the proposal of turn 1 (the teacher's own output)
    user        the measured outcome of turn 1 (p over M, solved and failed attempts) or the
                reason it was rejected
    ...         one assistant/user pair per earlier turn
    user        (the last outcome, then) the progression rule for this turn

**teachloop:** the budget is counted with a cheap estimate (characters / 4, plus a few tokens
per message). When the conversation is over it, the oldest *middle* pairs go first: the
opening (seed and rules) and the newest pair, which carries the rule, always stay, and the
opening says how many turns were left out. A conversation that is still too long after that
is sent as it is (the server's own context limit then decides).
"""

from __future__ import annotations

from collections.abc import Sequence

from teachloop.agents.state import TurnRecord

Message = dict[str, str]
NO_OUTPUT = "(no output)"  # an empty assistant message is refused by some chat templates


def estimate_tokens(messages: Sequence[Message]) -> int:
    """Tokens of ``messages``, estimated: characters / 4 + 4 per message (role and separators)."""
    return sum(len(m.get("content", "")) for m in messages) // 4 + 4 * len(messages)


def build_conversation(opening: Sequence[Message], history: Sequence[TurnRecord], request: str,
                       *, budget: int = 0) -> tuple[list[Message], int]:
    """(messages, turns dropped): ``opening`` (system + first user message), one pair per earlier
    turn, ``request`` (the progression rule of this turn) after the newest outcome.

    With no history the request is appended to the opening's user message (turn 1)."""
    opening = [dict(m) for m in opening]
    if not history:
        if request:
            opening[-1]["content"] = opening[-1]["content"].rstrip() + "\n\n" + request
        return opening, 0
    pairs: list[list[Message]] = []
    for k, h in enumerate(history):
        user = h["outcome"]
        if k == len(history) - 1 and request:
            user = f"{user}\n\n{request}"
        pairs.append([{"role": "assistant", "content": h["raw"] or NO_OUTPUT},
                      {"role": "user", "content": user}])
    dropped = 0
    note_cost = 40  # the omission note, in estimated tokens
    while budget and len(pairs) > 1 and estimate_tokens(
            [*opening, *(m for p in pairs for m in p)]) + (note_cost if dropped else 0) > budget:
        pairs.pop(0)
        dropped += 1
    if dropped:
        first = history[0]["turn"]
        last = history[dropped - 1]["turn"]
        span = f"turn {first}" if first == last else f"turns {first} to {last}"
        opening[-1]["content"] = (opening[-1]["content"].rstrip()
                                  + f"\n\n(Your answers and their results of {span} are left out "
                                    "here to keep this conversation within its length budget.)")
    return [*opening, *(m for p in pairs for m in p)], dropped
