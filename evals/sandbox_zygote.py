"""The zygote side of :mod:`teachloop.evals.sandbox`: the pre-forked supervisors, the namespaced
init and the program's process (see sandbox.py's docstring for the design).  Run as a script by
the caller (``python -s -P sandbox_zygote.py --zygote FD``); imports only the standard library
and its sibling sandbox_ns.py, loaded by path."""

from __future__ import annotations

import atexit
import builtins
import gc
import json
import linecache
import os
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import types

# --------------------------------------------------------------------------------------- knobs
STDOUT_CAP = 1 << 20  # bytes of stdout kept; one more -> "output_limit"
STDERR_CAP = 1 << 20
MAX_PROCS = 32  # RLIMIT_NPROC: processes + threads of the run
MAX_FILE_BYTES = 16 << 20  # RLIMIT_FSIZE
MAX_OPEN_FILES = 256  # RLIMIT_NOFILE
SANDBOX_UID_BASE = 1_900_000_000  # as root: uid = gid = base + supervisor pid (unique per run)
SANDBOX_UID_SPAN = 1 << 22  # >= the kernel's largest pid_max
FALLBACK_UID = 65534  # "nobody", when the high range is not mapped (inside a user namespace)
WORKDIR_PREFIX = "teachloop_sbx_"  # host working directories (only without a mount namespace)
SPARE_SUPERVISORS = 2  # sandboxes prepared ahead of requests (fork + namespaces off the hot path)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
ISOLATION_REQUIRED = ("pid_namespace", "mount_namespace", "net_namespace", "ipc_namespace", "readonly_root",
                      "private_tmp", "host_paths_hidden", "no_new_privs")


# ------------------------------------------------------------------------- Linux primitives
if __package__:  # imported as teachloop.evals.sandbox
    from . import sandbox_ns as ns
else:  # the zygote runs this file as a script (python -s -P): load the sibling module by path
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "teachloop_sandbox_ns", os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_ns.py"))
    ns = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(ns)

PRIVATE_WORKDIR = ns.PRIVATE_WORKDIR
WORKDIR_MB = ns.WORKDIR_MB
CLONE_NEWPID = ns.CLONE_NEWPID
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = (ns.PR_SET_PDEATHSIG, ns.PR_SET_CHILD_SUBREAPER,
                                                                  ns.PR_SET_NO_NEW_PRIVS)
_prctl, _unshare = ns.prctl, ns.unshare
# What the new root holds (ns.plan_binds), decided once by the zygote; inherited by every fork.
_BINDS: dict = {"links": [], "binds": [], "tmp_binds": []}


def _python_paths() -> list[str]:
    """The outermost directories Python needs: prefixes, the executable's directory, sys.path."""
    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable),
              os.path.dirname(os.path.realpath(sys.executable)), *sys.path}
    wanted = sorted(p for p in wanted if p and os.path.isabs(p) and os.path.isdir(p))
    return [p for p in wanted if not any(p.startswith(q + "/") for q in wanted)]


def _tasks_of_uid(uid: int) -> int:  # RLIMIT_NPROC counts every task of the uid, host-wide
    n = 0
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and os.stat(f"/proc/{d}").st_uid == uid:
                n += len(os.listdir(f"/proc/{d}/task"))
        except OSError:
            pass
    return n


def _children_of(pid: int) -> list[int]:  # needs CONFIG_PROC_CHILDREN (all major distributions)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):  # not root and the program made directories unreadable: chmod, retry
        for root, dirs, _ in os.walk(path):
            for d in dirs:
                p = os.path.join(root, d)
                if stat.S_ISDIR(os.lstat(p).st_mode):  # never chmod through a symlink
                    os.chmod(p, 0o700)
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- framing helpers
def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("peer closed")
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_frame_fd(fd: int) -> bytes:
    return _read_exact(fd, struct.unpack("!I", _read_exact(fd, 4))[0])


# ------------------------------------------------------------------------------ the program
_OLD_STDIO: list = []  # keep the zygote's std streams alive: their finalizers would close fds 0-2


def _run_program(info: dict, workdir: str | None, uid: int | None, fds: tuple[int, ...], go_r: int) -> None:
    """The program's process: limits, privileges and environment are set up ahead of time, then
    it waits for the request on `go_r` and runs the user's code. Never returns."""
    stdin_fd, out_w, err_w, st_w = fds
    try:
        os.setsid()
        for src, dst in ((stdin_fd, 0), (out_w, 1), (err_w, 2)):
            os.dup2(src, dst)
        cwd = workdir or PRIVATE_WORKDIR
        os.chdir(cwd)  # as root: works even if the temp root is not searchable by the sandbox uid
        nproc = MAX_PROCS if info["unique_uid"] else MAX_PROCS + _tasks_of_uid(os.getuid() if uid is None else uid)
        for res, lim in ((resource.RLIMIT_NPROC, (nproc, nproc)), (resource.RLIMIT_FSIZE, (MAX_FILE_BYTES,) * 2),
                         (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NOFILE, (MAX_OPEN_FILES,) * 2)):
            resource.setrlimit(res, lim)
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        if info.get("user_namespace"):  # we hold every capability of the run's user namespace: none left
            ns.drop_capabilities()
        _prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (su, sudo, ping) cannot regain privileges
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # setuid cleared it; die with our parent
        os.environ.clear()
        os.environ.update(PATH=SANDBOX_PATH, HOME=cwd, TMPDIR=cwd, LANG="C.UTF-8", PYTHONHASHSEED="0",
                          PYTHONIOENCODING="utf-8", PYTHONDONTWRITEBYTECODE="1", USER="sandbox", LOGNAME="sandbox")
        tempfile.tempdir = None
        for sig, handler in ((signal.SIGCHLD, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            signal.signal(sig, handler)
        req = json.loads(_read_frame_fd(go_r))  # ready: wait for the code (EOFError: supervisor gone)
        cpu = int(req["timeout_s"]) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        os.closerange(3, 1 << 30)  # the control channel, sockets, pipes: gone before user code runs
    except BaseException as exc:  # noqa: BLE001 - report anything, never run code half-confined
        _setup_failed(st_w, exc)
    _exec_user_code(req["code"], int(req["memory_mb"]))


def _exec_user_code(code: str, memory_mb: int) -> None:
    _OLD_STDIO.extend((sys.stdin, sys.stdout, sys.stderr))
    sys.stdin = sys.__stdin__ = open(0, "r", encoding="utf-8", newline="\n", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", newline="\n", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", newline="\n",
                                       buffering=1, closefd=False)
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    sys.path.insert(0, "")
    linecache.cache["<sandbox>"] = (len(code), None, code.splitlines(True), "<sandbox>")
    atexit._clear()
    rc = 0
    try:
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        exec(compile(code, "<sandbox>", "exec"), main.__dict__)
    except SystemExit as exc:
        rc = 0 if exc.code is None else exc.code & 0xFF if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException as exc:  # noqa: BLE001 - the interpreter's own behaviour: traceback, exit 1
        rc = 1
        try:  # the interpreter's (C, depth-limited) printer, or the program's own hook
            exc.__traceback__ = exc.__traceback__.tb_next  # hide this wrapper's frame
            sys.excepthook(type(exc), exc, exc.__traceback__)
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
            os.write(2, f"{type(exc).__name__}\n".encode())
    try:  # what the interpreter does at exit: join non-daemon threads, atexit, flush
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream, failed_rc in ((sys.stdout, 120), (sys.stderr, rc)):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            rc = rc or failed_rc
    os._exit(rc)


def _setup_failed(st_w: int, exc: BaseException) -> None:
    try:
        os.write(st_w, f"E {type(exc).__name__}: {exc}\n".encode()[:4000])
    finally:
        os._exit(125)


# -------------------------------------------------------------------------- the supervisor
def _sandbox_child(info: dict, workdir: str | None, uid: int | None, fds: tuple, go_r: int, close: tuple) -> None:
    """First child of a supervisor, forked before the request arrives: enters the namespaces.
    With a PID namespace it is the namespace's init: it forks the program's process (which
    waits for the request itself), reaps everything and reports the program's wait status on
    the status pipe; its exit makes the kernel kill whatever is left.  Never returns."""
    st_w = fds[3]
    try:
        for fd in close:
            os.close(fd)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        ns.isolate(info, _BINDS, os.getuid() if uid is None else uid)
        os.write(st_w, b"R\n")  # ready: the supervisor may now take a request
        if not info["pid_namespace"]:
            _run_program(info, workdir, uid, fds, go_r)
        program = os.fork()
        if program == 0:
            _run_program(info, workdir, uid, fds, go_r)
        for fd in (*fds[:3], go_r):
            os.close(fd)
        while True:  # as pid 1 we inherit orphans: reap them until the program itself exits
            pid, status = os.waitpid(-1, 0)
            if pid == program:
                os.write(st_w, b"S %d\n" % status)
                os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        _setup_failed(st_w, exc)


def _kill_tree(pid: int, info: dict, uid: int | None) -> None:
    """Kill the run's processes. The child `pid` must not be reaped yet (its pid stays ours)."""
    try:
        os.kill(pid, signal.SIGKILL)  # with a PID namespace: init dies -> the kernel kills the rest
    except OSError:
        pass
    if info["pid_namespace"]:
        return
    try:
        os.killpg(pid, signal.SIGKILL)  # the program is a session/group leader
    except OSError:
        pass
    if uid is not None and info["unique_uid"]:  # setsid daemons: kill(-1) as the run's own uid
        helper = os.fork()
        if helper == 0:
            try:
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(helper, 0)
    for _ in range(100):  # we are a child subreaper: escaped descendants are re-parented to us
        kids = [k for k in _children_of(os.getpid()) if k != pid]
        if not kids:
            break
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
        for k in kids:
            try:
                os.waitpid(k, 0)
            except ChildProcessError:
                pass


class _Sandbox:
    """One run's sandbox, prepared by a spare supervisor before any request arrives: temp dir
    (only without a mount namespace), stdin memfd, pipes, and the first child already inside
    its namespaces, waiting for the code."""

    def __init__(self, info: dict, inherited: tuple[int, ...]) -> None:
        self.info, self.pid, self.workdir = info, None, None
        self.uid = None
        try:
            self._prepare(inherited)
        except BaseException:
            self.close()
            raise

    def _prepare(self, inherited: tuple[int, ...]) -> None:
        info = self.info
        if info["dropped_privileges"]:
            self.uid = SANDBOX_UID_BASE + os.getpid() % SANDBOX_UID_SPAN if info["unique_uid"] else FALLBACK_UID
        if not info["private_tmp"]:  # else the working directory is a private tmpfs
            self.workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}_", dir=info["temp_root"])
            if self.uid is not None:
                os.chown(self.workdir, self.uid, self.uid)
        if info.get("user_namespace"):
            ns.enter_user_namespace()  # capabilities over the namespaces unshared below, none outside
        self.stdin = os.memfd_create("stdin")
        (self.out_r, out_w), (self.err_r, err_w), (self.st_r, st_w), (go_r, self.go_w) = (os.pipe() for _ in range(4))
        if info["pid_namespace"]:
            _unshare(CLONE_NEWPID)  # our next child is pid 1 of a fresh namespace
        else:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.pid = os.fork()
        if self.pid == 0:
            _sandbox_child(info, self.workdir, self.uid, (self.stdin, out_w, err_w, st_w), go_r,
                           (self.out_r, self.err_r, self.st_r, self.go_w, *inherited))
        for fd in (out_w, err_w, st_w, go_r):
            os.close(fd)
        ready = os.read(self.st_r, 2)
        self.early_report = b"" if ready == b"R\n" else ready  # else the start of an error report
        if info["mount_namespace"] and not self.early_report:
            # Hold the child's namespaces: they are then torn down (unmounting everything) when this
            # supervisor exits after answering, instead of on the hot path when the child exits.
            self.ns_fds = [os.open(f"/proc/{self.pid}/ns/{n}", os.O_RDONLY) for n in ("mnt", "ipc", "net", "uts")]

    def run(self, req: dict) -> dict:
        deadline = time.monotonic() + float(req["timeout_s"])
        _write_all(self.stdin, req["stdin"].encode())
        os.lseek(self.stdin, 0, os.SEEK_SET)  # the offset is shared with the program's fd 0
        body = json.dumps({k: req[k] for k in ("code", "timeout_s", "memory_mb")}).encode()
        try:
            _write_all(self.go_w, struct.pack("!I", len(body)) + body)
        except BrokenPipeError:
            pass  # the child failed its setup; its report says why
        caps = (int(req["stdout_cap"]), int(req["stderr_cap"]))
        bufs = {self.out_r: bytearray(), self.err_r: bytearray()}
        cap = dict(zip(bufs, caps))
        poller = select.poll()
        for fd in bufs:
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(self.pid)
            poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = None  # old kernel: poll the child every 20 ms instead
        streams, exited, reason = len(bufs), False, None
        while reason is None:
            if not exited and os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                exited = True  # zombie, not reaped: kill stragglers that might hold our pipes open
                _kill_tree(self.pid, self.info, self.uid)
                if pidfd is not None:
                    poller.unregister(pidfd)
            if exited and not streams:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = "timeout"
                break
            wait_ms = remaining * 1000 if (exited or pidfd is not None) else min(remaining * 1000, 20)
            for fd, _ in poller.poll(max(wait_ms, 1)):
                if fd == pidfd:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    poller.unregister(fd)
                    streams -= 1
                elif len(bufs[fd]) + len(chunk) > cap[fd]:
                    bufs[fd] += chunk[: cap[fd] + 1 - len(bufs[fd])]
                    reason = "output_limit"
                else:
                    bufs[fd] += chunk
        wait_status = self.close(kill=not exited)
        os.set_blocking(self.st_r, False)
        try:
            report = (self.early_report + os.read(self.st_r, 1 << 16)).decode(errors="replace")
        except BlockingIOError:
            report = self.early_report.decode(errors="replace")
        out, err = (bytes(bufs[fd][: cap[fd]]).decode("utf-8", "replace") for fd in (self.out_r, self.err_r))
        lines = report.splitlines()
        setup_error = next((line[2:] for line in lines if line.startswith("E ")), None)
        if self.info["pid_namespace"]:
            wait_status = next((int(line[2:]) for line in lines if line.startswith("S ")), None)
        rc = None
        if setup_error is not None:
            status, err = "error", f"[sandbox] setup failed: {setup_error}"
        elif reason is not None:
            status = reason
        elif wait_status is None:
            status = "error"
        elif os.WIFEXITED(wait_status):
            rc = os.WEXITSTATUS(wait_status)
            last = err.rstrip().rsplit("\n", 1)[-1]
            status = "ok" if rc == 0 else "memory" if rc == 1 and last.startswith("MemoryError") else "error"
        else:
            rc = -os.WTERMSIG(wait_status)
            status = "timeout" if rc == -signal.SIGXCPU else "error"
        return {"status": status, "stdout": out, "stderr": err, "returncode": rc}

    def close(self, kill: bool = True) -> int | None:
        """Kill and reap everything, remove the temp dir; returns the child's wait status."""
        status = None
        if self.pid:
            if kill:
                _kill_tree(self.pid, self.info, self.uid)
            status = os.waitpid(self.pid, 0)[1]
            self.pid = None
        if self.workdir:
            _rmtree(self.workdir)
            self.workdir = None
        return status


def _supervisor(ctrl: socket.socket, notify: tuple[int, int], info: dict) -> None:
    """A pre-forked supervisor: prepares a sandbox, then takes exactly one request from the
    control socket (the kernel hands each message to one waiting spare).  Never returns."""
    rc = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.close(notify[0])
        try:
            box: _Sandbox | Exception = _Sandbox(info, (ctrl.fileno(), notify[1]))
        except Exception as exc:  # noqa: BLE001 - answer the request with the reason
            box = exc
        fds: list[int] = []
        while not fds:
            msg, fds, _, _ = socket.recv_fds(ctrl, 16, 4)
            if not msg:  # the caller went away
                if isinstance(box, _Sandbox):
                    box.close()
                os._exit(0)
        try:
            os.write(notify[1], struct.pack("i", os.getpid()))  # the zygote forks a replacement
        except OSError:
            pass  # the zygote is gone; the caller will start a new one
        ctrl.close()
        conn = fds[0]
        os.write(conn, b"A")  # accepted: from now on the caller must not retry elsewhere
        try:
            req = json.loads(_read_frame_fd(conn))
            if isinstance(box, Exception):
                raise box
            ans = box.run(req)
        except Exception as exc:  # noqa: BLE001
            if isinstance(box, _Sandbox):
                box.close()
            ans = {"status": "error", "stdout": "", "stderr": f"[sandbox] supervisor error: {exc!r}",
                   "returncode": None}
        data = json.dumps(ans, ensure_ascii=False).encode()
        _write_all(conn, struct.pack("!I", len(data)) + data)
    except BaseException:  # noqa: BLE001 - e.g. the caller hung up
        rc = 1
    finally:
        os._exit(rc)


# ------------------------------------------------------------------------------ the zygote
def _privileged() -> bool:
    """Root with CAP_SYS_ADMIN: namespaces directly and per-run uids.  Anyone else (root without
    capabilities included) goes through a user namespace."""
    try:
        with open("/proc/self/status") as f:
            cap_eff = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        cap_eff = 0
    return os.geteuid() == 0 and bool(cap_eff & (1 << 21))  # CAP_SYS_ADMIN


def _probe() -> dict:
    """Find out, once, which isolation features this machine allows (in a throw-away child)."""
    root = _privileged()
    info: dict = {"root": root, "temp_root": tempfile.gettempdir()}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            got: dict = {"user_namespace": False, "pid_namespace": True}
            if not root:  # an ordinary user: the namespaces come from a user namespace of our own
                try:
                    ns.enter_user_namespace()
                    got["user_namespace"] = True
                except OSError as exc:
                    got["userns_error"] = f"{exc.strerror or exc}; {ns.userns_unavailable_reason()}"
            try:
                _unshare(CLONE_NEWPID)
            except OSError:
                got["pid_namespace"] = False
            inner = os.fork()
            if inner == 0:
                # the tmpfs /tmp is owned by the uid the program will run as, as in a real run
                got.update(ns.isolate(got, _BINDS, SANDBOX_UID_BASE if root else os.getuid(), probe=True))
                got["dropped_privileges"] = got["unique_uid"] = got["caps_dropped"] = False
                for uid in (SANDBOX_UID_BASE, FALLBACK_UID) if root else ():
                    try:
                        os.setgroups([])
                        os.setresgid(uid, uid, uid)
                        os.setresuid(uid, uid, uid)
                    except OSError:
                        continue
                    got["dropped_privileges"], got["unique_uid"] = True, uid == SANDBOX_UID_BASE
                    got["caps_dropped"] = True
                    break
                if got["user_namespace"]:
                    try:
                        ns.drop_capabilities()
                        got["caps_dropped"] = True
                    except OSError:
                        pass
                got["python_readable"] = all(os.access(p, os.R_OK | os.X_OK) for p in
                                             (os.path.dirname(os.__file__), os.path.dirname(sys.executable)))
                try:
                    _prctl(PR_SET_NO_NEW_PRIVS, 1)
                    got["no_new_privs"] = True
                except OSError:
                    got["no_new_privs"] = False
                os.write(w, json.dumps(got).encode())
                os._exit(0)
            os.waitpid(inner, 0)
        finally:
            os._exit(0)
    os.close(w)
    data = b"".join(iter(lambda: os.read(r, 65536), b""))
    os.close(r)
    os.waitpid(pid, 0)
    info.update(json.loads(data))
    if info["dropped_privileges"] and not info["python_readable"]:  # a sandbox that cannot import
        info["dropped_privileges"] = info["unique_uid"] = info["caps_dropped"] = False
        info["notes_extra"] = "Python installation unreadable by an unprivileged uid: programs run as root"
    if info["unique_uid"]:
        info["uid_range"] = [SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_SPAN]
    elif info["dropped_privileges"]:
        info["uid_range"] = [FALLBACK_UID, FALLBACK_UID + 1]
    info["rlimits"] = {"RLIMIT_CPU": "timeout_s + 2 s", "RLIMIT_AS": "memory_mb", "RLIMIT_NPROC": MAX_PROCS,
                       "RLIMIT_FSIZE": MAX_FILE_BYTES, "RLIMIT_NOFILE": MAX_OPEN_FILES, "RLIMIT_CORE": 0}
    info["output_caps"] = {"stdout": STDOUT_CAP, "stderr": STDERR_CAP}
    info["isolated"] = all(info.get(k) for k in ISOLATION_REQUIRED) and (info["dropped_privileges"] or (
        info["user_namespace"] and info["caps_dropped"]))
    notes = []
    if info["user_namespace"] and not (info["pid_namespace"] and info["mount_namespace"]):
        notes.append(f"user namespaces are restricted here ({ns.userns_unavailable_reason()}): created, but "
                     "without the right to make PID/mount namespaces in them")
    if not root and not info["user_namespace"]:
        notes.append(f"user namespaces unavailable ({info.get('userns_error')}): untrusted code runs with only "
                     "rlimits and can use the network, write and read what you can, and signal your processes")
    if not info["dropped_privileges"] and not info["caps_dropped"]:
        notes.append("no privilege drop: programs run as the caller's uid and can signal/modify what the caller can")
    for key, what in (("pid_namespace", "no PID namespace: strays are killed by process group, run uid and "
                                        "subreaper sweep"),
                      ("net_namespace", "no network namespace: programs can use the network"),
                      ("private_tmp", "no private /tmp: programs can write to world-writable host directories"),
                      ("host_paths_hidden", "no private root: programs can read what the caller can read"),
                      ("readonly_root", "root filesystem not read-only for programs")):
        if not info[key]:
            notes.append(what)
    if "notes_extra" in info:
        notes.append(info.pop("notes_extra"))
    info["notes"] = notes
    return info


def _sweep_stale_workdirs(root: str) -> None:
    """Without a uid change a program can kill its supervisor before it cleans up; the
    supervisor's pid is in the directory name, so remove directories of dead supervisors."""
    for name in os.listdir(root):
        if name.startswith(WORKDIR_PREFIX) and name[len(WORKDIR_PREFIX):].split("_")[0].isdigit():
            try:
                os.kill(int(name[len(WORKDIR_PREFIX):].split("_")[0]), 0)
            except ProcessLookupError:
                _rmtree(os.path.join(root, name))
            except OSError:
                pass


def _zygote_main(fd: int) -> None:
    ctrl = socket.socket(fileno=fd)
    _BINDS.update(ns.plan_binds(_python_paths()))
    info = _probe()
    info["bound_paths"] = _BINDS["binds"] + _BINDS["tmp_binds"]
    info["zygote_pid"] = os.getpid()
    ctrl.send(json.dumps(info).encode())
    gc.freeze()  # keep the collector off the zygote's objects: fewer copy-on-write faults per fork
    notify_r, notify_w = os.pipe()
    poller = select.poll()
    poller.register(ctrl.fileno(), 0)  # hang-up only: the spares read the requests
    poller.register(notify_r, select.POLLIN)
    spares: set[int] = set()
    next_sweep = 0.0
    while True:
        while len(spares) < SPARE_SUPERVISORS:
            try:
                pid = os.fork()
            except OSError:
                break  # retried after the poll below
            if pid == 0:
                _supervisor(ctrl, (notify_r, notify_w), info)
            spares.add(pid)
        for fd, ev in poller.poll(1000):
            if fd == notify_r:
                for (pid,) in struct.iter_unpack("i", os.read(notify_r, 4096)):
                    spares.discard(pid)  # busy now
            elif ev & (select.POLLHUP | select.POLLERR):
                return  # the caller went away (its spares see EOF and exit too)
        while True:  # reap finished supervisors, and spares that died idle
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            spares.discard(pid)
        if not info["dropped_privileges"] and time.monotonic() > next_sweep:
            _sweep_stale_workdirs(info["temp_root"])
            next_sweep = time.monotonic() + 1.0



if __name__ == "__main__" and sys.argv[1:2] == ["--zygote"]:
    _zygote_main(int(sys.argv[2]))
