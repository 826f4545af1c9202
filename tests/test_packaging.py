"""Packaging: teachloop installs under one import name and sits beside packages that own the
bare names of its folders (openai-agents installs `agents`, OpenAI's evals installs `evals`).

Run: pytest tests/test_packaging.py (the openai-agents test is in the `full` tier: it installs
from PyPI into a scratch venv).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("agents", "curriculum", "training", "evals", "prompts", "configs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=300)
    (whl,) = out.glob("teachloop-*.whl")
    return whl


def test_wheel_has_one_top_level_package_with_the_folders_and_their_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"teachloop", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for folder in FOLDERS:
        assert f"teachloop/{folder}/__init__.py" in names, folder
    # package data travels under the new names
    assert "teachloop/configs/quickstart.yaml" in names
    assert any(n.startswith("teachloop/prompts/math/") and n.endswith(".md") for n in names)
    assert any(n.startswith("teachloop/evals/families/data/") for n in names)


@pytest.mark.parametrize("name", FOLDERS)
def test_bare_names_do_not_import(name, tmp_path):
    # from elsewhere: nothing is installed under the bare name
    r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "No module named" in r.stderr, r.stderr
    # from the repository root the folder is on sys.path, and refuses with a clear line
    r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode != 0 and f"installs as 'teachloop.{name}'" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-c", f"import teachloop.{name}"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.full
def test_openai_agents_and_teachloop_in_one_environment(tmp_path):
    """A scratch venv layered on this one (a .pth to its site-packages), openai-agents installed
    from PyPI into it, teachloop installed from the repo: both import, each its own `agents`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "zz-parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    r = subprocess.run(pip + ["-c", str(REPO / "constraints.txt"), "openai-agents"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and ("NewConnectionError" in r.stderr or "No matching distribution" in r.stderr):
        pytest.skip(f"PyPI not reachable: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    subprocess.run(pip + ["--no-deps", str(REPO)], check=True, capture_output=True, timeout=600)
    code = ("import agents, teachloop.agents.backends, teachloop.evals.sandbox; "
            "assert hasattr(agents, 'Agent') and hasattr(agents, 'Runner'), agents.__file__; "
            "print(agents.__file__)")
    r = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert "site-packages/agents/__init__.py" in r.stdout
