"""A plain TRL GRPO script (the baseline ``examples/trl_dropin.py`` changes two lines of).

    python examples/trl_grpo.py [MODEL]      # default: HuggingFaceTB/SmolLM2-135M-Instruct

A small arithmetic dataset built in the script (a ``prompt`` column and the ``solution``
column the reward function reads), one accuracy reward, TRL's GRPOTrainer.
"""

import re
import sys

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

MODEL = sys.argv[1] if len(sys.argv) > 1 else "HuggingFaceTB/SmolLM2-135M-Instruct"

pairs = [(2, 3), (7, 1), (4, 4), (12, 9), (23, 45), (31, 17), (6, 7), (88, 13)]
dataset = Dataset.from_dict({
    "prompt": [[{"role": "user", "content": f"What is {a} + {b}? Reply with the number only."}]
               for a, b in pairs],
    "solution": [str(a + b) for a, b in pairs],
})


def accuracy_reward(completions, solution, **kwargs):
    """1.0 when the last number in the completion is the solution, else 0.0."""
    out = []
    for completion, sol in zip(completions, solution):
        numbers = re.findall(r"-?\d+", completion[-1]["content"])
        out.append(1.0 if numbers and numbers[-1] == sol else 0.0)
    return out


training_args = GRPOConfig(output_dir="trl-grpo-out", max_steps=2, num_generations=4, per_device_train_batch_size=4, max_completion_length=16, learning_rate=1e-6, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0)
trainer = GRPOTrainer(
    model=MODEL,
    reward_funcs=accuracy_reward,
    args=training_args,
    train_dataset=dataset,
)
trainer.train()
