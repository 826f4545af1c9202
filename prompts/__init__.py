"""teachloop.prompts (installed from the top-level folder `prompts/`; see pyproject's package-dir)."""

if __name__ != "teachloop.prompts":  # the folder imported by its bare name from the repo root
    raise ImportError("this folder installs as 'teachloop.prompts'; import it under that name "
                      "(the bare name 'prompts' belongs to other PyPI packages)")
