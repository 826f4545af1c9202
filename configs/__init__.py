"""teachloop.configs (installed from the top-level folder `configs/`; see pyproject's package-dir)."""

if __name__ != "teachloop.configs":  # the folder imported by its bare name from the repo root
    raise ImportError("this folder installs as 'teachloop.configs'; import it under that name "
                      "(the bare name 'configs' belongs to other PyPI packages)")
