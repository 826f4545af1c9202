"""Run a command as an unprivileged uid (65534, "nobody") with this Python, from root.

    python tests/as_unprivileged.py [--uid 65534] -- python -m pytest ...

Used by tests/test_sandbox_unprivileged.py to run the hostile suite as an ordinary user would.
An interpreter installed under a closed directory (pyenv in /root, mode 0700) cannot be executed
by that uid; rather than loosening host permissions, the command then runs in a private mount
namespace where a tiny tmpfs covers each closed directory and only the Python paths below it
are bound back (nothing else of /root becomes visible).  The uid change happens after that, so
the command itself runs with no privilege at all: what it can do is what an ordinary user can.

``why_not()`` returns the reason this cannot work here (not root, no setresuid, a closed
directory with no mount namespace to fix it), or None.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

NOBODY = 65534
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x20000, 4096, 16384, 1 << 18, 2, 4


def python_paths() -> list[str]:
    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable),
              os.path.dirname(os.path.realpath(sys.executable)), *sys.path}
    wanted = sorted(p for p in wanted if p and os.path.isabs(p) and os.path.isdir(p))
    return [p for p in wanted if not any(p.startswith(q + "/") for q in wanted)]


def closed_dirs(paths: list[str]) -> dict[str, list[str]]:
    """{directory not searchable by 'others': [needed paths below it]}"""
    closed: dict[str, list[str]] = {}
    for path in paths:
        real = os.path.realpath(path)
        parts = real.split("/")
        for i in range(2, len(parts) + 1):
            ancestor = "/".join(parts[:i])
            if not os.stat(ancestor).st_mode & 0o001:
                closed.setdefault(ancestor, []).append(real)
                break
    return closed


def why_not(uid: int = NOBODY) -> str | None:
    if os.geteuid() != 0:
        return "not root: cannot switch to another uid (this run already is the unprivileged one)"
    if subprocess.run(["setpriv", "--version"], capture_output=True).returncode != 0:
        return "setpriv (util-linux) not found"
    probe = subprocess.run([sys.executable, __file__, "--uid", str(uid), "--", sys.executable, "-c", "import pytest"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this Python cannot run as uid {uid}: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def _mount(libc, src, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def expose(closed: dict[str, list[str]]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    for directory, paths in closed.items():
        fds = [os.open(p, os.O_PATH) for p in paths]
        _mount(libc, "tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
        for path, fd in zip(paths, fds):
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(libc, f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)


def main(argv: list[str]) -> None:
    uid = NOBODY
    if argv[:1] == ["--uid"]:
        uid, argv = int(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    closed = closed_dirs(python_paths() + [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))])  # + the repo
    if closed:
        expose(closed)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
