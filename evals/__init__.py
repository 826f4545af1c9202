"""teachloop.evals (installed from the top-level folder `evals/`; see pyproject's package-dir)."""

if __name__ != "teachloop.evals":  # the folder imported by its bare name from the repo root
    raise ImportError("this folder installs as 'teachloop.evals'; import it under that name "
                      "(the bare name 'evals' belongs to other PyPI packages)")
