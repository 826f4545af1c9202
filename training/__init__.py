"""teachloop.training (installed from the top-level folder `training/`; see pyproject's package-dir)."""

if __name__ != "teachloop.training":  # the folder imported by its bare name from the repo root
    raise ImportError("this folder installs as 'teachloop.training'; import it under that name "
                      "(the bare name 'training' belongs to other PyPI packages)")
