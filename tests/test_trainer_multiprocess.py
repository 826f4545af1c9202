"""The curriculum trainer on several processes: rank 0 decides, every rank applies.

Run: pytest tests/test_trainer_multiprocess.py -q -m full   (two gloo processes on CPU with
                                                           the embedded SmolLM2-135M, ~2-4 min)

The fast half checks ``training/dist.py``'s pieces in one process. The full test launches a
real 2-process run with ``accelerate launch`` and compares what each rank decided, bound,
spliced and reset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from teachloop.training.batch import splice_groups  # noqa: E402
from teachloop.training.dist import decide, pad_groups  # noqa: E402


def test_pad_groups_makes_rows_divide_over_processes():
    assert pad_groups(["a", "b"], 4, 2) == ["a", "b"]
    assert pad_groups(["a"], 3, 2) == ["a", "a"]  # 3 rows -> 6
    assert pad_groups(["a", "b", "c"], 1, 4) == ["a", "b", "c", "c"]
    with pytest.raises(ValueError):
        pad_groups([], 4, 2)


def test_decide_in_one_process_is_a_call():
    class One:
        num_processes, is_main_process = 1, True

    assert decide(One(), lambda x: x + 1, 1) == 2


def _batch(ids, width=3):
    n = len(ids)
    return {"prompt_ids": torch.tensor(ids).unsqueeze(1).repeat(1, 2),
            "prompt_mask": torch.ones(n, 2, dtype=torch.long),
            "completion_ids": torch.tensor(ids).unsqueeze(1).repeat(1, width),
            "completion_mask": torch.ones(n, width, dtype=torch.long),
            "advantages": torch.tensor(ids, dtype=torch.float),
            "num_items_in_batch": torch.tensor(n * width)}


def test_splice_with_offset_takes_the_rows_this_process_holds():
    # global batch of 3 groups of G=2 (rows 0..5), this process holds global rows 2..3
    # (group 1); group 1 is replaced by refill group 1 (global refill rows 2..3)
    local = _batch([10, 11])
    refill = _batch([20, 21, 22, 23], width=4)  # every refill row (gathered)
    out = splice_groups(local, refill, [0, 1], 2, pad_token_id=0, start=2)
    assert out["prompt_ids"][:, -1].tolist() == [22, 23]
    assert out["completion_ids"].shape == (2, 4)  # re-padded to the wider batch
    assert out["advantages"].tolist() == [22.0, 23.0]
    # a process whose rows hold no replaced group keeps its batch
    out = splice_groups(_batch([14, 15]), refill, [0, 1], 2, pad_token_id=0, start=4)
    assert out["prompt_ids"][:, -1].tolist() == [14, 15]


def test_config_refuses_fewer_steps_per_generation_than_accumulation(tmp_path):
    from teachloop.errors import UserError
    from teachloop.train import main
    from teachloop.training.config import CurriculumGRPOConfig

    from tests.test_trainer import build_pool

    bad = {"gradient_accumulation_steps": 2, "steps_per_generation": 1}
    with pytest.raises(ValueError, match="steps_per_generation=1 < gradient_accumulation_steps=2"):
        CurriculumGRPOConfig(output_dir=str(tmp_path / "o"), use_cpu=True, report_to="none",
                             num_generations=4, per_device_train_batch_size=4,
                             curriculum_mode="grpo", **bad)
    build_pool(tmp_path, n=3)
    with pytest.raises(UserError) as e:  # the CLI prints it as one line, no traceback
        main(tmp_path, mode="vcrl", extra_args=bad, batch_size=4)
    assert "\n" not in str(e.value) and "steps_per_generation=1" in str(e.value)


_DRIVER = r"""
import functools, hashlib, json, os, sys
from pathlib import Path
import torch
from teachloop.curriculum.pool import open_pool
from teachloop.training.config import CurriculumGRPOConfig
from teachloop.training.data import PoolData
from teachloop.training.trainer import CurriculumGRPOTrainer

run, mode = Path(sys.argv[1]), sys.argv[2]
rank = int(os.environ["RANK"])
store = open_pool(run, create=False)
data = PoolData.from_pool(store)
order = sorted(data.items, key=lambda i: data.items[i].difficulty)  # easy -> hard
# buckets (K=3) [0, 1], [2, 3], [4, 5]: items 3 and 5 are never solved (VCRL drops them and
# refills from the bank); the others are solved 3 of 4 times (p = 0.75: bucket 0 merges B_1
# at step 0, so item 3 can be drawn from step 1 on)
pattern = {i: ([0.0] * 4 if k in (3, 5) else [1.0, 1.0, 1.0, 0.0]) for k, i in enumerate(order)}

def scripted_accuracy(completions, item_id, **kw):
    return [pattern[i][k % 4] for k, i in enumerate(item_id)]

def jitter(completions, **kw):
    return [0.1 * (k % 4) for k in range(len(completions))]

args = CurriculumGRPOConfig(
    output_dir=str(run / "out"), curriculum_mode=mode, max_steps=4, seed=0, use_cpu=True,
    bf16=False, report_to="none", disable_tqdm=True, logging_steps=1, num_generations=4,
    per_device_train_batch_size=4, max_completion_length=8, learning_rate=1e-4,
    beta=0.1 if "adacurl" in mode else 0.0, save_strategy="no",
    accuracy_reward="scripted_accuracy", vcrl_config={"kappa_warmup": 0.3},
    adacurl_config={"num_buckets": 3, "window": 4})
trainer = CurriculumGRPOTrainer("MODEL", reward_funcs=[scripted_accuracy, jitter], args=args, data=data)
prompts = {i: data.items[i].prompt for i in data.items}

def id_of(text):
    hits = [i for i, p in prompts.items() if p in text]
    return max(hits, key=lambda i: len(prompts[i])) if hits else None

final = []
real = trainer._generate_and_score_completions
def wrapped(inputs):
    out = real(inputs)
    if trainer.model.training:
        texts = trainer.processing_class.batch_decode(out["prompt_ids"], skip_special_tokens=True)
        final.append({"rows": [id_of(t) for t in texts],
                      "loss_rows": (out["completion_mask"].sum(1) > 0).tolist()})
    return out
trainer._generate_and_score_completions = wrapped
trainer.train()

def digest(model):
    h = hashlib.sha1()
    for n, p in sorted(model.named_parameters()):
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()

ref = trainer.ref_model
(run / f"rank{rank}.json").write_text(json.dumps({
    "history": [{k: h[k] for k in ("step", "ids", "drawn", "local_ids", "active")} | {
        "refilled": h.get("vcrl/refilled", 0.0), "masked": h.get("curriculum/masked_groups", 0.0)}
                for h in trainer.history],
    "final": final, "merges": [e.step for e in trainer.merge_log], "ref_resets": trainer.ref_resets,
    "policy": digest(trainer.accelerator.unwrap_model(trainer.model)),
    "ref": digest(ref) if ref is not None else None,
    "world": trainer.accelerator.num_processes,
}))
"""


@pytest.mark.full  # two processes, four steps: ~2-4 min on 2 shared cores
@pytest.mark.parametrize("mode", ["vcrl+adacurl"])
def test_two_processes_decide_on_rank0_and_agree(tmp_path, mode):
    from teachloop.agents.embedded import embedded_model_path
    from teachloop.curriculum.pool import open_pool

    from tests.test_trainer import build_pool

    build_pool(tmp_path, n=6)
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER.replace('"MODEL"', repr(str(embedded_model_path()))))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "29517", str(driver), str(tmp_path), mode]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [x["world"] for x in ranks] == [2, 2]
    h0, h1 = ranks[0]["history"], ranks[1]["history"]
    assert [h["step"] for h in h0] == [0, 1, 2, 3]
    for a, b in zip(h0, h1):
        # the same decisions on both ranks: the draw, the active set, the batch after refills
        assert a["drawn"] == b["drawn"] and a["active"] == b["active"] and a["ids"] == b["ids"]
        assert a["refilled"] == b["refilled"] and a["masked"] == b["masked"]
        # each rank bound its own half of the drawn rows (G = 4, 2 groups: one group each)
        assert a["local_ids"] == [a["drawn"][0]] * 4 and b["local_ids"] == [a["drawn"][1]] * 4
    # the rows each rank trained on are its half of the batch after the VCRL splice: a refill
    # group made on either rank reached the rank that holds the group it replaced
    for k, (f0, f1) in enumerate(zip(ranks[0]["final"], ranks[1]["final"])):
        assert f0["rows"] + f1["rows"] == [i for i in h0[k]["ids"] for _ in range(4)]
    assert sum(h["refilled"] for h in h0) >= 1, "no VCRL refill happened: the test lost its point"
    assert ranks[0]["merges"] == ranks[1]["merges"] and ranks[0]["merges"], "no AdaCuRL merge"
    assert ranks[0]["ref_resets"] == ranks[1]["ref_resets"] == len(ranks[0]["merges"])
    # DDP keeps the policies equal; each rank's own reference reset kept the references equal
    assert ranks[0]["policy"] == ranks[1]["policy"] and ranks[0]["ref"] == ranks[1]["ref"]
    # only rank 0 wrote the pool's training stats: every rolled-out group counted once
    store = open_pool(tmp_path, create=False)
    rolled = sum(4 * (len(h["ids"]) + h["refilled"]) for h in h0)
    assert sum(it.train_attempts for it in store.query()) == rolled
