"""``teachloop doctor``: the checks to run when something is off, one line each (ok/warn/fail).

    teachloop doctor            # or: python -m teachloop.doctor

Checks: the sandbox's isolation (teachloop.evals.sandbox.isolation(): user namespaces, root,
or unprotected), the embedded model (its GGUF and the converted checkpoint in the cache), an
OpenAI-compatible endpoint named by OPENAI_BASE_URL (reachable? GET /models), Chromium (for the
report's screenshot), and the versions of the libraries teachloop builds on.  Exit code 1 when
a check fails, 0 otherwise (warnings included).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

LIBRARIES = ("torch", "transformers", "trl", "langgraph", "math-verify", "reasoning-gym", "openai")
REQUIRED = ("torch", "transformers", "trl")


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # "ok" | "warn" | "fail"
    detail: str


def check_sandbox() -> Check:
    from teachloop.evals import sandbox

    try:
        iso = sandbox.isolation()
    except Exception as exc:  # noqa: BLE001 - the zygote failed to start: that is the finding
        return Check("sandbox", "fail", f"the sandbox does not start: {exc}")
    namespaces = [n for n in ("pid", "mount", "net", "ipc", "uts") if iso.get(f"{n}_namespace")]
    how = "root, per-run uids" if iso.get("dropped_privileges") else (
        "user namespace, no capabilities" if iso.get("user_namespace") else "no privilege drop")
    if iso.get("isolated"):
        return Check("sandbox", "ok", f"isolated ({how}): {', '.join(namespaces)} namespaces, read-only private "
                                      f"root, private /tmp")
    level = "fail" if sandbox.require_isolation() else "warn"
    first = iso["notes"][0] if iso["notes"] else "isolation incomplete"
    return Check("sandbox", level, f"NOT isolated ({how}): {first}"
                 + ("" if level == "fail" else "; set TEACHLOOP_REQUIRE_ISOLATION=1 to refuse untrusted code"))


def check_embedded_model() -> Check:
    from teachloop.agents import embedded

    cache = embedded.cache_dir()
    try:
        gguf = embedded.embedded_gguf_path()
    except embedded.EmbeddedModelError as exc:
        return Check("embedded model", "warn", str(exc).split(";")[0] + f" (cache {cache})")
    converted = sorted((cache / "models").glob(f"{embedded.EMBEDDED_NAME}-*-f32/{embedded._MARKER}"))
    state = f"converted checkpoint in {converted[-1].parent}" if converted else \
        f"not converted yet (the first run converts it into {cache / 'models'}, ~1 min)"
    if not converted and cache.exists() and not os.access(cache, os.W_OK):
        return Check("embedded model", "fail", f"GGUF {gguf.name} found, cache {cache} not writable")
    return Check("embedded model", "ok", f"GGUF {gguf.name} ({gguf.stat().st_size >> 20} MiB); {state}")


def check_endpoint(timeout_s: float = 3.0) -> Check:
    base = os.environ.get("OPENAI_BASE_URL", "").strip()
    if not base:
        return Check("endpoint", "ok", "OPENAI_BASE_URL not set: the embedded or a local model is used")
    url = base.rstrip("/") + "/models"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return Check("endpoint", "ok", f"{url} answered {resp.status}")
    except urllib.error.HTTPError as exc:  # reachable; the server said no
        level = "warn" if exc.code in (401, 403) else "ok" if exc.code == 404 else "warn"
        return Check("endpoint", level, f"{url} reachable, answered HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason
        return Check("endpoint", "fail", f"OPENAI_BASE_URL={base} unreachable: {reason}")


def check_chromium() -> Check:
    from teachloop.report import find_chromium

    exe = find_chromium()
    if exe:
        return Check("chromium", "ok", f"{exe} (report screenshots)")
    return Check("chromium", "warn", "not found: reports are written without a screenshot (apt-get install chromium)")


def check_libraries() -> Check:
    found, missing = [], []
    for dist in LIBRARIES:
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            missing.append(dist)
    level = "fail" if any(d in REQUIRED for d in missing) else "warn" if missing else "ok"
    return Check("libraries", level, f"python {sys.version.split()[0]}; " + ", ".join(found)
                 + (f"; missing: {', '.join(missing)}" if missing else ""))


CHECKS: tuple[Callable[[], Check], ...] = (check_sandbox, check_embedded_model, check_endpoint, check_chromium,
                                           check_libraries)


def run_checks() -> list[Check]:
    out = []
    for fn in CHECKS:
        try:
            out.append(fn())
        except Exception as exc:  # noqa: BLE001 - a broken check is reported, the others still run
            out.append(Check(fn.__name__.removeprefix("check_").replace("_", " "), "fail",
                             f"check crashed: {type(exc).__name__}: {exc}"))
    return out


def main(print_fn: Callable[[str], None] = print) -> int:
    """Print one line per check; return the exit code (1 if any check failed)."""
    checks = run_checks()
    for c in checks:
        print_fn(f"{c.level:4s}  {c.name:15s} {c.detail}")
    return 1 if any(c.level == "fail" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
