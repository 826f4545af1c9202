"""CurriculumGRPOTrainer on a CUDA device: each curriculum mode a few steps in bf16.

    python benchmarks/gpu_trainer_smoke.py --tokenizer DIR [--steps 4] [--model CKPT]

For a GPU box where the embedded model's weights are not at hand (the lent GPU machine takes
at most 64 MiB of files): without ``--model`` the policy is SmolLM2-135M's architecture with
random weights and the given tokenizer. Rewards are the real correctness and format rewards
plus a seeded coin (``coin_reward``, the accuracy reward the curriculum reads), so groups are
informative and VCRL and AdaCuRL have something to select, drop, refill and merge. It checks
the CUDA path (bf16, the reference model, sparse KL, bucket merges with the reference reset,
VCRL re-rolls) and prints step times; it says nothing about learning.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path



def coin_reward(completions, item_id, **kwargs):
    """A seeded coin per completion: informative groups without a trained model."""
    return [float(random.random() < 0.5) for _ in completions]


def build_pool(run_dir: Path, n_items: int, seed: int):
    from teachloop.curriculum.pool import open_pool
    from teachloop.evals.families import get_family

    items = get_family("math.word").seeds(n_items, seed=seed)
    store = open_pool(run_dir)
    store.insert_many(items)
    rng = random.Random(seed)
    # measured difficulties spread over (0, 1), so AdaCuRL has buckets to merge
    stats = [(it.id, 8, float(rng.randint(1, 7))) for it in items]
    store.record_many(stats, kind="probe", policy="synthetic")
    return store


def random_model(tokenizer_dir: str):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg), tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", required=True, help="a tokenizer directory (chat template)")
    ap.add_argument("--model", default=None, help="a checkpoint; default: random SmolLM2-135M")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--modes", default="grpo,vcrl,adacurl,vcrl+adacurl")
    ap.add_argument("--batch", type=int, default=16, help="completions per step")
    ap.add_argument("--G", type=int, default=8, help="group size")
    ap.add_argument("--tokens", type=int, default=64, help="max completion tokens")
    ap.add_argument("--cpu", action="store_true", help="check the script itself on a CPU")
    ap.add_argument("--out", type=Path, default=None, help="write a JSON summary here")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from teachloop.training.config import CurriculumGRPOConfig
    from teachloop.training.data import PoolData
    from teachloop.training.rewards import make_correctness_reward, make_format_reward
    from teachloop.training.trainer import CurriculumGRPOTrainer

    cuda = torch.cuda.is_available() and not args.cpu
    assert cuda or args.cpu, "no CUDA device (--cpu checks the script on a CPU)"
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device {name}, torch {torch.__version__}")
    summary = {"device": name, "torch": torch.__version__, "modes": {}}
    for mode in args.modes.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"gpu_{mode.replace('+', '-')}_"))
        store = build_pool(work, args.items, seed=0)
        data = PoolData.from_pool(store)
        model = args.model
        if model is None:  # TRL loads the reference model by path: save the random one
            m, t = random_model(args.tokenizer)
            model = str(work / "random-model")
            m.save_pretrained(model)
            t.save_pretrained(model)
            del m
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        cfg = CurriculumGRPOConfig(
            output_dir=str(work / "out"), curriculum_mode=mode, max_steps=args.steps,
            per_device_train_batch_size=args.batch, num_generations=args.G,
            max_completion_length=args.tokens, learning_rate=1e-6, beta=0.04, bf16=cuda,
            use_cpu=not cuda, logging_steps=1, save_strategy="no",
            report_to="none", seed=0, accuracy_reward="coin_reward",
            adacurl_config={"window": 32} if "adacurl" in mode else None,
        )
        random.seed(0)
        rewards = [make_correctness_reward(data.items), make_format_reward(data.items, 64), coin_reward]
        trainer = CurriculumGRPOTrainer(model, args=cfg, data=data, reward_funcs=rewards,
                                        processing_class=tok)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
        logs = [x for x in trainer.state.log_history if "step_time" in x]
        st = [x["step_time"] for x in logs]
        inf = [x.get("curriculum/informative_frac") for x in logs]
        merges = [x.get("adacurl/merges") for x in logs if "adacurl/merges" in x]
        row = {"steps": trainer.state.global_step, "wall_s": round(wall, 2),
               "median_step_s": round(statistics.median(st), 3) if st else None,
               "informative_frac": inf, "merges": merges[-1] if merges else None,
               "max_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}
        summary["modes"][mode] = row
        print(mode, json.dumps(row))
        del trainer
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
