"""teachloop.training (installed from the top-level folder `training/`; see pyproject's package-dir).

``from teachloop.training import CurriculumGRPOConfig, CurriculumGRPOTrainer`` is the TRL
drop-in (``examples/trl_dropin.py``); they load lazily, so importing a light submodule
(``teachloop.training.rewards``) does not import TRL.
"""

if __name__ != "teachloop.training":  # the folder imported by its bare name from the repo root
    raise ImportError("this folder installs as 'teachloop.training'; import it under that name "
                      "(the bare name 'training' belongs to other PyPI packages)")

__all__ = ["CurriculumGRPOConfig", "CurriculumGRPOTrainer"]


def __getattr__(name: str):
    if name == "CurriculumGRPOConfig":
        from teachloop.training.config import CurriculumGRPOConfig

        return CurriculumGRPOConfig
    if name == "CurriculumGRPOTrainer":
        from teachloop.training.trainer import CurriculumGRPOTrainer

        return CurriculumGRPOTrainer
    raise AttributeError(f"module 'teachloop.training' has no attribute {name!r}")
