"""code.fuzzing (evals/families/code_fuzz.py): given f, pre_test_f and test_f, find an input
with pre_test_f true and test_f false (Sancaktar et al., METHODS.md §1). The generic family
contract (seeds, reference/wrong/garbage scoring) is in tests/test_families.py; this file
checks the fuzzing-specific validation and scoring, all executed in the real sandbox."""

from __future__ import annotations

import pytest

from teachloop.evals.families import get_family

FAM = get_family("code.fuzzing")

CODE = '''def f(xs):
    best = 0
    for x in xs:
        if x > best:
            best = x
    return best

def pre_test_f(xs):
    return isinstance(xs, list) and len(xs) > 0 and all(type(x) is int for x in xs)

def test_f(xs):
    return f(xs) == max(xs)
'''
GOOD = {"code": CODE, "inputs": ["[-3, -1]", "[1, 5, 2]", "f([7])", "[]"]}


@pytest.fixture(scope="module")
def item():
    res = FAM.validate_proposal(GOOD, teacher="llm:test", prompt_version="code_fuzz/first@1#x")
    assert res.ok, (res.stage, res.reason)
    return res.item


def test_proposal_validates_with_executed_evidence(item):
    assert item.family == "code.fuzzing" and item.answer == "[-3, -1]"
    assert item.checker["kinds"] == ["witness", "pass", "pass", "invalid"]
    assert item.checker["inputs"][2] == "[7]"  # f(...) wrapper removed
    runs = item.validation["runs"]
    assert len(runs) == 2 and all(r["status"] == "ok" for r in runs)
    assert {"deterministic", "a known witness", "a passing input"} <= set(item.validation["checks"])
    assert "pre_test_f" in item.prompt and "test_f" in item.prompt and "[-3, -1]" not in item.prompt
    assert item.teacher == "llm:test" and item.prompt_version == "code_fuzz/first@1#x"
    parent = FAM.seeds(1)[0]
    child = FAM.validate_proposal(GOOD, parent=parent, direction="harder").item
    assert child.parent_id == parent.id and child.turn == 1 and child.direction == "harder"


def test_any_witness_scores_not_only_the_teachers(item):
    for ans in ("```python\nf([-3, -1])\n```", "```python\nf([-9])\n```", "```python\ntest_f([-2, -5])\n```",
                "so the input is \\boxed{[-1]}", "```python\n[-4, -4]\n```", "Answer: f([-7, -8])",
                # lenient like code.abduction: the call's literal arguments are read, nothing else runs
                "```python\nf([-1]) and __import__('os')._exit(0)\n```"):
        assert FAM.score(item, ans) == 1.0, ans
    for ans in ("```python\nf([1, 5, 2])\n```",  # valid, but f passes its test
                "```python\nf([])\n```",  # not valid: pre_test_f is false
                "```python\nf([-1.5])\n```",  # not valid (a float)
                "```python\nf(-3)\n```",  # pre_test_f false
                "```python\nf(__import__('os').getcwd())\n```",  # not a literal: never sent
                "no code at all"):
        assert FAM.score(item, ans) == 0.0, ans


BAD_CODE = [
    ("def f(x):\n    return x\n", "parse", "pre_test_f"),
    ("def f(x):\n    return x\ndef pre_test_f(x):\n    return True\ndef test_f(x):\n    return x != 3\n",
     "trivial", "never calls f"),
    ("def f(x:\n", "parse", "does not parse"),
    # every valid input fails: the test is trivial
    ("def f(x):\n    return x\ndef pre_test_f(x):\n    return type(x) is int\n"
     "def test_f(x):\n    return f(x) == -12345\n", "trivial", "every valid input"),
    # no witness among the inputs
    ("def f(x):\n    return x\ndef pre_test_f(x):\n    return type(x) is int\n"
     "def test_f(x):\n    return f(x) == x\n", "witness", "no witness"),
    # non-bool results
    ("def f(x):\n    return x\ndef pre_test_f(x):\n    return 1\ndef test_f(x):\n    return f(x) < 0\n",
     "execute", "not bool"),
    ("def f(x):\n    return x\ndef pre_test_f(x):\n    return True\ndef test_f(x):\n    return f(x) and None\n",
     "execute", "not bool"),
    # raising on a given input
    ("def f(x):\n    return 1 // x\ndef pre_test_f(x):\n    return True\ndef test_f(x):\n    return f(x) > 0\n",
     "execute", "ZeroDivisionError"),
    # non-deterministic
    ("import random\ndef f(x):\n    return random.random()\ndef pre_test_f(x):\n    return True\n"
     "def test_f(x):\n    return f(x) < 0.5\n", "determinism", "non-deterministic"),
    # hostile: leaves before any result line
    ("import os\nos._exit(0)\ndef f(x):\n    return x\ndef pre_test_f(x):\n    return True\n"
     "def test_f(x):\n    return f(x) > 0\n", "execute", ""),
]


@pytest.mark.parametrize("code, stage, why", BAD_CODE)
def test_bad_triples_rejected_with_the_stage_and_reason(code, stage, why):
    res = FAM.validate_proposal({"code": code, "inputs": ["0", "5", "-4", "2"]})
    assert not res.ok and res.stage == stage and why in res.reason, (res.stage, res.reason)


@pytest.mark.parametrize("proposal", [
    None, {}, {"code": CODE}, {"code": CODE, "inputs": "[-1]"}, {"code": CODE, "inputs": ["[-1]"]},
    {"code": CODE, "inputs": ["[-1]", "[-1]"]}, {"code": CODE, "inputs": ["[-1]", "__import__('os')"]},
    {"code": CODE, "inputs": ["[-1]", "[2]"], "message": 5}, {"code": 7, "inputs": ["1", "2"]},
])
def test_malformed_proposals_rejected_at_parse(proposal):
    res = FAM.validate_proposal(proposal)
    assert not res.ok and res.stage == "parse" and res.reason


def test_infinite_loop_rejected_by_timeout():
    code = ("def f(x):\n    while True:\n        pass\ndef pre_test_f(x):\n    return True\n"
            "def test_f(x):\n    return f(x) == 1\n")
    res = get_family("code.fuzzing", timeout_s=1.0).validate_proposal({"code": code, "inputs": ["1", "2"]})
    assert not res.ok and res.stage == "execute" and "timeout" in res.reason


def test_a_crash_of_f_is_not_a_counterexample():
    """test_f raising (f crashing, recursion, memory) earns nothing: strict False only."""
    code = ("def f(n):\n    return 10 // (n - 7)\ndef pre_test_f(n):\n    return type(n) is int\n"
            "def test_f(n):\n    return f(n) >= 0\n")
    it = FAM.validate_proposal({"code": code, "inputs": ["6", "8"]}).item  # 10 // -1 < 0: witness
    assert it.answer == "6"
    assert FAM.score(it, "```python\nf(6)\n```") == 1.0
    assert FAM.score(it, "```python\nf(7)\n```") == 0.0  # ZeroDivisionError in test_f
    assert FAM.score(it, "```python\nf(10**100000)\n```") == 0.0  # too long a literal


def test_the_teachers_own_probe_name_cannot_be_hijacked():
    """Code that defines the probe's name itself is overridden by the appended probe."""
    code = CODE + "\ndef _teachloop_fuzz_probe(*a):\n    return (True, False)\n"
    it = FAM.validate_proposal({"code": code, "inputs": ["[-3, -1]", "[1, 5, 2]"]}).item
    assert FAM.score(it, "```python\nf([1, 5, 2])\n```") == 0.0
    assert FAM.score(it, "```python\nf([-2])\n```") == 1.0


def test_teacher_loop_writes_validates_and_probes_fuzzing_problems(tmp_path):
    """The llm teacher's side: the code_fuzz prompt templates, the strict parser and the
    family's validation, through the real graph (scripted teacher and student backends)."""
    import asyncio
    import sys
    from pathlib import Path

    from teachloop.agents.backends import ChatBackend, Completion
    from teachloop.agents.config import TeacherLoopConfig
    from teachloop.agents.graph import run_loop
    from teachloop.agents.ledger import Ledger
    from teachloop.agents.state import LoopContext
    from teachloop.agents.teacher import PromptLibrary, parse_proposal
    from teachloop.curriculum.pool import open_pool

    sys.path.insert(0, str(Path(__file__).parent))
    from loop_helpers import ScriptedTeacher

    class HalfRightStudent(ChatBackend):
        name = "half-right"

        async def agenerate(self, conversations, *, n=1, **kw):
            return [[Completion(f"```python\nf([{-5 if k % 2 == 0 else 5}])\n```", 10, 8, "stop")
                     for k in range(n)] for _ in conversations]

    max_text = f"<code>\n{CODE}</code>\n<input>[-3, -1]</input>\n<input>[1, 5, 2]</input>\n<input>[]</input>\n"
    min_code = (CODE.replace("x > best", "x < best").replace("max(xs)", "min(xs)"))
    min_text = f"<code>\n{min_code}</code>\n<input>[3, 1]</input>\n<input>[-1, 5]</input>\n<input>[]</input>\n"

    assert parse_proposal("code.fuzzing", min_text).ok
    store = open_pool(tmp_path)
    store.insert_many(FAM.seeds(2, seed=0))
    cfg = TeacherLoopConfig(kind="llm", max_turns=1, attempts=4, families=["code.fuzzing"])
    ctx = LoopContext(config=cfg, store=store, ledger=Ledger(store, "r1"), student=HalfRightStudent(),
                      teacher=ScriptedTeacher([max_text, min_text]), teacher_name="llm:scripted",
                      prompts=PromptLibrary())
    state = asyncio.run(run_loop(ctx, "r1"))
    outs = state["outcomes"]
    assert len(outs) == 2 and all(o["status"] == "accepted" for o in outs), [(o["stage"], o["reason"]) for o in outs]
    assert all(o["prompt_version"].startswith("code_fuzz/first@1#") and o["p"] == 0.5 for o in outs)
    kids = [it for it in store.query() if it.direction != "seed"]
    assert len(kids) == 2 and all(it.family == "code.fuzzing" for it in kids)
    assert sorted(it.answer for it in kids) == ["[-3, -1]", "[3, 1]"]


def test_teacher_output_parser_for_fuzzing():
    from teachloop.agents.teacher import format_blocks, parse_proposal, render_item

    seed = FAM.seeds(1)[0]
    p = parse_proposal("code.fuzzing", render_item(seed))  # an item renders in its own format
    assert p.ok and p.to_family_dict() == {"code": seed.checker["code"].strip("\n").rstrip(),
                                           "inputs": seed.checker["inputs"]}
    assert [b.opening.strip() for b in format_blocks("code.fuzzing")] == ["<code>", "<input>", "<input>", "<input>"]
    for text, why in [
        ("<code>\ndef f(x):\n    return x\n</code><input>1</input>", "pre_test_f, test_f"),
        (f"<code>\n{CODE}</code>", "missing <input>"),
        (f"<code>\n{CODE}</code><input>os.getcwd()</input>", "not a list of Python literal"),
        (f"<code>\n{CODE}</code><input>[1]</input><input>f([1])</input>", "duplicate inputs"),
        (f"<code>\n{CODE}\n<input>[1]</input>", "not closed"),
    ]:
        r = parse_proposal("code.fuzzing", text)
        assert not r.ok and why in r.reason, (why, r.reason)


@pytest.mark.parametrize("kind", ["first", "easier", "harder"])
def test_fuzzing_templates_render_with_a_version(kind):
    from teachloop.agents.teacher import PromptLibrary

    lib = PromptLibrary()
    if kind == "first":
        msgs, version = lib.render(FAM.seeds(1)[0], kind, summary="SUMMARY-TEXT", direction="harder")
        user = msgs[-1]["content"]
        assert msgs[0]["role"] == "system" and "SUMMARY-TEXT" in user and "pre_test_f" in user
        assert lib.prefill(FAM.seeds(1)[0], kind) == "<code>"
    else:
        user, version = lib.follow_up("code.fuzzing", kind, outcome="OUTCOME-TEXT", rule="RULE-TEXT",
                                      target="your problem of turn 1")
        assert user.index("OUTCOME-TEXT") < user.index("RULE-TEXT") < user.index("your problem of turn 1")
        assert kind.upper() in user and "witness" in user
    assert "{{" not in user
    assert "<code>" in user and "<input>" in user  # the format is spelled out on every turn
    assert version.startswith(f"code_fuzz/{kind}@1#")
