"""Sandboxed execution of untrusted Python code (teacher reference programs, student code).

``run_python(code)`` runs ``code`` as a fresh ``__main__`` in a separate, resource-limited,
namespaced process and returns a :class:`SandboxResult` whose status is ``ok``, ``timeout``,
``error``, ``memory`` or ``output_limit``.  It protects every user, not only root: an ordinary
user gets the same namespaces through a user namespace.  ``isolation()`` reports which
protections are active (probed once, when the helper process starts); where they are missing
the first run logs one warning line, and ``set_require_isolation(True)`` or
``TEACHLOOP_REQUIRE_ISOLATION=1`` makes ``run_python`` raise :class:`IsolationUnavailable`
instead of running code unprotected.  ``teachloop doctor`` shows the same report.

Modules: sandbox.py (the caller's side), sandbox_zygote.py (zygote, supervisors, the program's
process), sandbox_ns.py (user/PID/mount/net/IPC/UTS namespaces and the new root).

How it works
    caller --SEQPACKET socketpair--> zygote: a fresh ``python -s -P sandbox_zygote.py --zygote``,
        started lazily, so it inherits neither the caller's heap (torch) nor its threads nor its
        environment; restarted transparently if it dies and re-created after the caller forks.
        Per run the caller makes a socketpair, passes one end over the control socket
        (SCM_RIGHTS) and exchanges one length-prefixed JSON request and answer on it.  The
        program's stdout/stderr travel on other pipes, so output imitating the protocol is
        just output.
    zygote --fork--> spare supervisors (SPARE_SUPERVISORS of them, host namespaces).  Each
        prepares one sandbox *before* a request exists, then blocks on the control socket; the
        kernel hands every request to exactly one of them, and the zygote forks a replacement.
    supervisor [not root: unshare(CLONE_NEWUSER), uid/gid mapped to themselves] --unshare(
        CLONE_NEWPID), fork--> init, pid 1 of a new PID namespace: new mount, network, IPC and
        UTS namespaces and a new root (pivot_root): a read-only tmpfs holding read-only binds
        of /usr, /lib*, a few /etc files, five /dev nodes and the Python install with its
        sys.path, a fresh /proc, and a size-limited tmpfs on /tmp (also /var/tmp, /dev/shm) as
        the working directory.  Home directories, the repository, /run, /sys are not there.  It
        reaps everything and reports the program's wait status; when it exits the kernel kills
        whatever is left in the namespace (double-forked setsid daemons included).
    init --fork--> program: setsid, rlimits, as root an unprivileged uid/gid of its own, in a
        user namespace no capabilities at all (bounding set included) and no nested user
        namespaces (user.max_user_namespaces = 0 inside); no_new_privs, scrubbed environment;
        then it waits for the request, closes every inherited descriptor and runs
        ``exec(compile(code, "<sandbox>", "exec"))``.
    The supervisor enforces the wall clock and the output caps, kills, reaps and answers.

Why raw namespaces and not bubblewrap
    bwrap is an exec wrapper: it can only start a *new* process inside its namespaces, so every
    run would pay a fresh interpreter (plus bwrap's own setup) instead of a fork of the warm
    zygote.  Measured here (2 loaded cores, medians of 30, root and uid 65534 alike):
    ``python -S -c pass`` 44 ms, the same under ``bwrap --unshare-all`` with binds like ours
    59-62 ms, while a sandbox run of a trivial program costs about a quarter of ``python -c``
    (benchmarks/bench_sandbox.py).  The same kernel calls bwrap makes (unshare, uid_map,
    pivot_root, mount_setattr) are made here, in a process that is already running Python.

What is covered
    - Wall-clock timeout (SIGKILL of the whole namespace or process group, whatever the program
      does with signals), CPU time (RLIMIT_CPU), memory (RLIMIT_AS; MemoryError -> "memory"),
      processes and threads (RLIMIT_NPROC of a per-run uid as root; of a per-run user
      namespace otherwise), file size (RLIMIT_FSIZE), open files (RLIMIT_NOFILE), no core dumps.
    - stdout/stderr are read with a cap (1 MiB each by default): a flood is cut off and killed
      ("output_limit") without filling memory or disk; bytes decode with errors="replace".
    - As root and as any user where user namespaces are allowed: the program cannot signal or
      see host processes (the caller's included), has no network (empty network namespace;
      127.0.0.1 and abstract unix sockets are its own), cannot read or write anything of the
      host beyond the read-only system and Python binds (no home, no repository, no host /tmp),
      and cannot leave files or SysV IPC objects behind.
    - Every run starts in a fresh empty working directory (HOME=TMPDIR=cwd), with an environment
      holding nothing of the caller's (no tokens, no HOME=/root), and a fixed PYTHONHASHSEED.
    - Thread-safe and fork-safe; a dead zygote costs the runs in flight an "error" at most.

What is not covered
    - Not a boundary against kernel exploits: no seccomp filter (io_uring, keyrings, ... stay
      reachable; as root the per-run uid may still create user namespaces), no cgroup.  Memory
      is limited per process, so a run may use up to MAX_PROCS * memory_mb of address space.
      The bound system directories (/usr, some /etc files) are readable.
    - Where user namespaces are disabled (kernel.unprivileged_userns_clone=0,
      user.max_user_namespaces=0, AppArmor's restriction, a default Docker container) and the
      caller is not root: no namespaces, the program runs as the caller's uid and can use the
      network, read and write what the caller can and signal the caller's processes; strays
      are killed by process group and a child-subreaper sweep.  ``isolation()`` says so, one
      warning is logged, and require_isolation refuses instead.
    - "memory" is inferred from a final ``MemoryError`` line on stderr, so a program can fake
      it (it can only downgrade its own verdict).  The program runs under CPython's normal
      semantics in its own process; it can wreck that process, not the caller.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from . import sandbox_zygote as _zy
from .sandbox_zygote import (  # noqa: F401 - the knobs, re-exported
    ISOLATION_REQUIRED, MAX_FILE_BYTES, MAX_OPEN_FILES, MAX_PROCS, SANDBOX_PATH, SPARE_SUPERVISORS, STDERR_CAP,
    STDOUT_CAP, WORKDIR_PREFIX,
)

CALLER_GRACE_S = 10.0  # the caller stops waiting this long after timeout_s (wedged supervisor)

STATUSES = ("ok", "timeout", "error", "memory", "output_limit")


@dataclass(frozen=True)
class SandboxResult:
    status: str  # one of STATUSES
    stdout: str
    stderr: str
    returncode: int | None  # exit code, -signal, or None when we killed it / it never ran
    duration_s: float


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("sandbox supervisor closed the connection without an answer")
        buf += chunk
    return bytes(buf)


# ------------------------------------------------------------------------------ the caller
class _Zygote:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONSAFEPATH": "1", "TMPDIR": tempfile.gettempdir()}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-s", "-P", os.path.abspath(_zy.__file__), "--zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=env, cwd="/", start_new_session=True)
        finally:
            theirs.close()
        ours.settimeout(60)
        hello = ours.recv(1 << 16)
        if not hello:
            ours.close()
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("sandbox zygote failed to start")
        ours.settimeout(None)
        self.sock, self.owner, self.info, self.closed = ours, os.getpid(), json.loads(hello), False
        _warn_once(self.info)

    def alive(self) -> bool:  # waitid(WNOWAIT) neither reaps nor contends with Popen's waitpid lock
        try:
            return not self.closed and os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def close(self) -> None:
        self.closed = True
        self.sock.close()  # EOF: the zygote exits; in-flight supervisors finish on their own
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_lock = threading.Lock()
_zygote: _Zygote | None = None


def _after_fork_in_child() -> None:
    global _lock, _zygote
    _lock = threading.Lock()
    if _zygote is not None:
        _zygote.sock.close()  # our copy only; the parent keeps its zygote, we start our own
    _zygote = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _get_zygote() -> _Zygote:
    global _zygote
    with _lock:
        if _zygote is not None and _zygote.owner != os.getpid():
            _zygote = None  # forked without at-fork hooks: that zygote belongs to our parent
        if _zygote is None or not _zygote.alive():
            if _zygote is not None:
                _zygote.close()
            _zygote = _Zygote()
        return _zygote


def _discard(z: _Zygote) -> None:
    global _zygote
    with _lock:
        if _zygote is z:
            _zygote = None
    z.close()


def shutdown() -> None:
    """Stop this process's zygote (a later run starts a new one)."""
    global _zygote
    with _lock:
        z, _zygote = _zygote, None
    if z is not None and z.owner == os.getpid():
        z.close()


atexit.register(shutdown)


def isolation() -> dict:
    """Which isolation features are active here, probed once when the zygote starts (this starts
    it if needed).  Booleans: root, user_namespace, pid_namespace, mount_namespace, net_namespace,
    ipc_namespace, uts_namespace, host_paths_hidden, proc_remounted, python_exposed, readonly_root,
    private_tmp, dropped_privileges (per-run uid), unique_uid, caps_dropped, nested_userns_blocked,
    no_new_privs, and isolated (everything in ISOLATION_REQUIRED plus a privilege drop); plus
    bound_paths, uid_range (sandbox uids, as root), rlimits, output_caps, zygote_pid, and notes:
    one sentence per missing protection."""
    return dict(_get_zygote().info)


class IsolationUnavailable(RuntimeError):
    """require_isolation is set and this machine cannot isolate untrusted code."""


_require: bool | None = None  # set_require_isolation(); None: the TEACHLOOP_REQUIRE_ISOLATION env var decides


def set_require_isolation(flag: bool | None) -> None:
    """Refuse (raise IsolationUnavailable) instead of running untrusted code unprotected.
    None returns the decision to the environment variable TEACHLOOP_REQUIRE_ISOLATION=1."""
    global _require
    _require = None if flag is None else bool(flag)


def require_isolation() -> bool:
    if _require is not None:
        return _require
    return os.environ.get("TEACHLOOP_REQUIRE_ISOLATION", "").strip().lower() in ("1", "true", "yes", "on")


def _why(info: dict) -> str:
    notes = info["notes"] or ["isolation incomplete"]
    return notes[0] + (f" (+{len(notes) - 1} more in isolation()['notes'])" if len(notes) > 1 else "")


def _refusal(info: dict) -> str:
    return f"sandbox: refusing to run untrusted code without isolation (require_isolation is set): {_why(info)}"


def _warn_once(info: dict) -> None:
    global _warned
    if not info["isolated"] and not _warned:
        _warned = True
        logging.getLogger("teachloop.sandbox").warning(
            "sandbox: untrusted code runs WITHOUT full isolation here: %s (TEACHLOOP_REQUIRE_ISOLATION=1 refuses "
            "instead; `teachloop doctor` checks this)", _why(info))


_warned = False


def _roundtrip(payload: bytes, limit_s: float) -> dict:
    def lost(status: str, why: str) -> dict:
        return {"status": status, "stdout": "", "stderr": f"[sandbox] {why}", "returncode": None}

    for attempt in range(5):
        time.sleep(0.05 * attempt)
        z = _get_zygote()
        mine, theirs = socket.socketpair()
        with mine:
            mine.settimeout(limit_s)
            try:
                try:
                    socket.send_fds(z.sock, [b"R"], [theirs.fileno()])
                finally:
                    theirs.close()
                mine.sendall(struct.pack("!I", len(payload)) + payload, socket.MSG_NOSIGNAL)
                accepted = mine.recv(1)
            except TimeoutError:
                return lost("timeout", "no supervisor took the request")
            except OSError:
                accepted = b""
            if not accepted:  # dropped before any supervisor took it (zygote died): nothing ran, retry
                if not z.alive():
                    _discard(z)
                continue
            try:
                return json.loads(_recv_exact(mine, struct.unpack("!I", _recv_exact(mine, 4))[0]))
            except TimeoutError:
                return lost("timeout", "the supervisor did not answer")
            except (OSError, EOFError, ValueError) as exc:
                if not z.alive():
                    _discard(z)
                return lost("error", f"run lost: {exc}")
    return lost("error", "could not reach the sandbox zygote")


def run_python(code: str, *, timeout_s: float = 5.0, memory_mb: int = 512, stdin: str = "",
               stdout_cap: int = STDOUT_CAP, stderr_cap: int = STDERR_CAP) -> SandboxResult:
    """Run `code` as a fresh ``__main__`` in the sandbox and return what happened.

    status: "ok" (exit code 0), "error" (non-zero exit, uncaught exception, killed by a signal,
    sandbox failure), "timeout" (wall clock or CPU limit; we killed it), "memory" (MemoryError
    under the `memory_mb` address-space limit), "output_limit" (stdout or stderr exceeded its
    cap; kept output is truncated to the cap).  Never raises for anything the program does;
    raises IsolationUnavailable when require_isolation() is on and isolation() is incomplete.
    """
    if timeout_s <= 0 or memory_mb <= 0:
        raise ValueError("timeout_s and memory_mb must be positive")
    if require_isolation() and not (info := _get_zygote().info)["isolated"]:
        raise IsolationUnavailable(_refusal(info))
    start = time.monotonic()
    payload = json.dumps({"code": code, "timeout_s": timeout_s, "memory_mb": memory_mb, "stdin": stdin or "",
                          "stdout_cap": stdout_cap, "stderr_cap": stderr_cap}).encode()
    ans = _roundtrip(payload, timeout_s + CALLER_GRACE_S)
    return SandboxResult(ans["status"], ans["stdout"], ans["stderr"], ans["returncode"], time.monotonic() - start)

