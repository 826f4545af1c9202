"""The sandbox as an ordinary user (issue 15): the hostile suite again as uid 65534, and the
behaviour where user namespaces are disabled (one warning line, isolation() says so,
require_isolation refuses).

The first test needs root to switch uid (tests/as_unprivileged.py; a Python under a closed
directory such as /root/.pyenv is made reachable in a private mount namespace, nothing else).
When the tests already run as a non-root user, tests/test_sandbox*.py as run are the
unprivileged run and it skips.  The second works as any user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import as_unprivileged  # tests/ is on sys.path (rootdir conftest)

REPO = Path(__file__).resolve().parent.parent
HELPER = Path(as_unprivileged.__file__).resolve()


def _env(home: str) -> dict:
    return {**os.environ, "HOME": home, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TEACHLOOP_REQUIRE_ISOLATION": ""}


def _nobody_home() -> str:
    home = tempfile.mkdtemp(prefix="teachloop_nobody_home_")
    os.chown(home, as_unprivileged.NOBODY, as_unprivileged.NOBODY)
    return home


def test_hostile_suite_as_unprivileged_user():
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: tests/test_sandbox*.py as run are the unprivileged run")
    why = as_unprivileged.why_not()
    if why:
        pytest.skip(why)
    home = _nobody_home()
    try:
        probe = subprocess.run([sys.executable, str(HELPER), "--", sys.executable, "-c", "import json; from "
                                "teachloop.evals.sandbox import isolation; print(json.dumps(isolation()))"],
                               cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr[-2000:]
        iso = json.loads(probe.stdout.strip().splitlines()[-1])
        if not iso["user_namespace"]:  # the kernel's choice, not ours: the next test covers this case
            pytest.skip(f"user namespaces unavailable to uid {as_unprivileged.NOBODY} here: {iso['notes'][0]}")
        assert iso["isolated"] and iso["caps_dropped"] and iso["nested_userns_blocked"], iso
        proc = subprocess.run(
            [sys.executable, str(HELPER), "--", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_sandbox.py", "tests/test_sandbox_breaches.py"],
            cwd=REPO, env={**_env(home), "SANDBOX_TESTS_STRICT": "1"}, capture_output=True, text=True, timeout=300)
        leftovers = os.listdir(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 75 and "failed" not in summary and "error" not in summary, summary
    assert leftovers == [], f"files left in the unprivileged user's home: {leftovers}"


DISABLED = r"""
import json, os, sys
import teachloop.evals.sandbox_ns as ns
try:  # a user namespace of our own, where no user namespace may be created: userns "disabled"
    ns.enter_user_namespace()
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    ns.drop_capabilities()
except OSError:
    pass  # user namespaces are already unavailable here
from teachloop.evals import sandbox as sb
iso = sb.isolation()
out = {k: iso[k] for k in ("isolated", "user_namespace", "pid_namespace", "net_namespace", "notes")}
out["ran"] = sb.run_python("print(6 * 7)").stdout  # not required: runs, unprotected
sb.set_require_isolation(True)
try:
    sb.run_python("print('must not run')")
    out["refused"] = None
except sb.IsolationUnavailable as exc:
    out["refused"] = str(exc)
sb.set_require_isolation(None)
os.environ["TEACHLOOP_REQUIRE_ISOLATION"] = "1"
try:
    sb.run_python("print('must not run')")
    out["refused_env"] = None
except sb.IsolationUnavailable as exc:
    out["refused_env"] = str(exc)
print(json.dumps(out))
"""


def test_without_user_namespaces_warns_reports_and_refuses():
    home = _nobody_home() if os.geteuid() == 0 else tempfile.mkdtemp()
    prefix = [sys.executable, str(HELPER), "--"] if os.geteuid() == 0 else []
    if prefix and as_unprivileged.why_not():
        pytest.skip(as_unprivileged.why_not())
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", DISABLED], cwd=REPO, env=_env(home),
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["user_namespace"] is False and out["isolated"] is False, out
    assert not out["pid_namespace"] and not out["net_namespace"], out
    assert any("user namespaces unavailable" in n and "max_user_namespaces = 0" in n for n in out["notes"]), out
    assert out["ran"] == "42\n"
    for refusal in (out["refused"], out["refused_env"]):
        assert refusal and refusal.startswith("sandbox: refusing to run untrusted code"), out
    warnings = [line for line in proc.stderr.splitlines() if "WITHOUT full isolation" in line]
    assert len(warnings) == 1 and "user namespaces unavailable" in warnings[0], proc.stderr
