"""teachloop.agents (installed from the top-level folder `agents/`; see pyproject's package-dir)."""

if __name__ != "teachloop.agents":  # the folder imported by its bare name from the repo root
    raise ImportError("this folder installs as 'teachloop.agents'; import it under that name "
                      "(the bare name 'agents' belongs to other PyPI packages)")
