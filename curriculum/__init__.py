"""teachloop.curriculum (installed from the top-level folder `curriculum/`; see pyproject's package-dir)."""

if __name__ != "teachloop.curriculum":  # the folder imported by its bare name from the repo root
    raise ImportError("this folder installs as 'teachloop.curriculum'; import it under that name "
                      "(the bare name 'curriculum' belongs to other PyPI packages)")
