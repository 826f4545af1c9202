"""The TRL drop-in: ``CurriculumGRPOTrainer`` on a plain ``datasets.Dataset``.

Run: pytest tests/test_trainer_dropin.py -q          (the fast half: no model)
     pytest tests/test_trainer_dropin.py -q -m full  (runs examples/trl_dropin.py: ~1-2 min)
"""

from __future__ import annotations

import ast
import difflib
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402

from teachloop.training.data import DatasetData  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _code(path: Path) -> list[str]:
    """The script's lines after its module docstring."""
    text = path.read_text()
    doc = ast.parse(text).body[0]
    assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
    return text.splitlines()[doc.end_lineno:]


def test_dropin_is_the_trl_script_with_two_lines_changed():
    trl_lines, ours = _code(EXAMPLES / "trl_grpo.py"), _code(EXAMPLES / "trl_dropin.py")
    diff = [d for d in difflib.ndiff(trl_lines, ours) if d[:2] in ("- ", "+ ")]
    removed = [d[2:] for d in diff if d.startswith("- ")]
    added = [d[2:] for d in diff if d.startswith("+ ")]
    assert removed == ['from trl import GRPOConfig, GRPOTrainer',
                       next(x for x in trl_lines if x.startswith("training_args = GRPOConfig("))]
    assert added[0] == ("from teachloop.training import CurriculumGRPOConfig as GRPOConfig, "
                        "CurriculumGRPOTrainer as GRPOTrainer")
    # the config line: the curriculum mode added, the output directory renamed, nothing else
    assert added[1] == removed[1].replace('GRPOConfig(output_dir="trl-grpo-out", ',
                                          'GRPOConfig(curriculum_mode="vcrl+adacurl", '
                                          'output_dir="trl-dropin-out", ')
    assert len(added) == 2


def test_dataset_rows_ids_and_difficulty_column():
    ds = Dataset.from_dict({"prompt": ["a", "b", "c"], "solution": ["1", "2", "3"],
                            "difficulty": [0.2, None, 0.9]})
    data = DatasetData(ds)
    assert list(data.items) == ["0", "1", "2"]
    assert data.difficulties() == {"0": 0.2, "2": 0.9}
    assert data.unmeasured == ["1"]
    assert data.rows(["2"], 2) == [{"prompt": "c", "solution": "3", "difficulty": 0.9,
                                    "item_id": "2"}] * 2
    data.measured({"1": [1.0, 0.0, 0.0, 0.0]})
    assert data.difficulties()["1"] == 0.75 and data.items["1"].attempts == 4
    assert data.dataset()["item_id"] == ["0", "1", "2"]
    data.record([("0", 4, 3.0)])
    assert (data.items["0"].train_attempts, data.items["0"].train_successes) == (4, 3.0)
    with pytest.raises(ValueError, match="resume with the dataset"):
        data.ensure(["7"])
    own = DatasetData(Dataset.from_dict({"prompt": ["a", "b"], "item_id": ["x", "y"]}))
    assert list(own.items) == ["x", "y"]


@pytest.mark.parametrize("bad, match", [
    ({"question": ["a"]}, "'prompt' column"),
    ({"prompt": ["a"], "difficulty": [1.5]}, "difficulty must lie in"),
    ({"prompt": ["a", "b"], "item_id": ["x", "x"]}, "unique"),
])
def test_dataset_mistakes_say_what_is_wrong(bad, match):
    with pytest.raises(ValueError, match=match):
        DatasetData(Dataset.from_dict(bad))


def test_trainer_takes_train_dataset_or_data_not_both(tmp_path):
    from teachloop.training.config import CurriculumGRPOConfig
    from teachloop.training.trainer import CurriculumGRPOTrainer

    args = CurriculumGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                num_generations=4, per_device_train_batch_size=4)
    ds = Dataset.from_dict({"prompt": ["a"]})
    with pytest.raises(TypeError, match="not both or neither"):
        CurriculumGRPOTrainer("m", reward_funcs=len, args=args)
    with pytest.raises(TypeError, match="not both or neither"):
        CurriculumGRPOTrainer("m", reward_funcs=len, args=args, train_dataset=ds, data=object())
    with pytest.raises(TypeError, match="reward_funcs is required"):
        CurriculumGRPOTrainer("m", args=args, train_dataset=ds)
    with pytest.raises(TypeError, match="CurriculumGRPOConfig"):
        CurriculumGRPOTrainer("m", reward_funcs=len, train_dataset=ds)


@pytest.mark.full  # difficulty measurement (8 rows x 4 rollouts) + 2 steps: ~1-2 min on 2 cores
def test_dropin_script_runs_with_curriculum(tmp_path):
    from teachloop.agents.embedded import embedded_model_path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(EXAMPLES / "trl_dropin.py"), str(embedded_model_path())],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "measured the difficulty of 8 rows" in out  # no difficulty column: measured first
    assert out.count("'curriculum/informative_frac'") == 2 and out.count("'vcrl/kappa'") == 2
    assert out.count("'adacurl/cs'") == 2
