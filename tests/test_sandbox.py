"""teachloop.evals.sandbox against hostile programs (DESIGN.md, "Verification": hostile code must never
hurt the host, the pool, or the run).

Every hostile case asserts its status and that run_python returned within timeout_s + 1 s.
Cases that would damage the host if the corresponding isolation were missing (kill(-1),
writing outside the workdir, network) are skipped, with the reason, when isolation() says the
feature is not active on this machine.  The last tests check, after the whole suite, that no
process of the sandbox uids is left and that the zygote still works.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import tempfile
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from teachloop.evals import sandbox as sb
from teachloop.evals.sandbox import SandboxResult, isolation, run_python

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def iso() -> dict:
    return isolation()


STRICT = os.environ.get("SANDBOX_TESTS_STRICT") == "1"  # set by test_sandbox_unprivileged: fail, never skip


def need(iso: dict, *features: str) -> None:
    """Skip unless at least one of `features` is active (each guards the host on its own).
    Under SANDBOX_TESTS_STRICT=1 a missing feature fails the test instead."""
    if not any(iso.get(f) for f in features):
        if STRICT:
            pytest.fail(f"isolation lacks {' / '.join(features)} (SANDBOX_TESTS_STRICT=1): {iso['notes']}")
        pytest.skip(f"isolation lacks {' / '.join(features)} here: running this would touch the host")


def run(code: str, timeout_s: float = 1.0, **kw) -> SandboxResult:
    start = time.monotonic()
    r = run_python(textwrap.dedent(code), timeout_s=timeout_s, **kw)
    elapsed = time.monotonic() - start
    assert elapsed <= timeout_s + 1.0, f"took {elapsed:.2f}s for timeout_s={timeout_s}: {r}"
    assert r.status in sb.STATUSES
    return r


def sandbox_uid_processes(iso: dict, only_uid: int | None = None) -> list[int]:
    lo, hi = (only_uid, only_uid + 1) if only_uid is not None else (iso.get("uid_range") or (0, 0))
    found = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/status") as f:
                uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
        except (OSError, StopIteration, ValueError):
            continue
        if lo <= uid < hi:
            found.append(int(d))
    return found


def _stat(pid: int) -> tuple[int, int, int, bytes]:
    """(parent pid, session id, real uid, command line) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    uid = os.stat(f"/proc/{pid}").st_uid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return int(fields[1]), int(fields[3]), uid, f.read()


def under_another_live_zygote(pid: int, iso: dict) -> bool:
    """True for sandbox processes of some other caller's live zygote (a concurrent test run,
    pytest-xdist...): walking up through processes forked from a zygote, the topmost one is a
    zygote (a session leader, started with start_new_session) and not a stray supervisor."""
    lo, hi = iso["uid_range"]
    top = None
    try:
        for _ in range(64):
            ppid, sid, uid, cmdline = _stat(pid)
            if b"--zygote" not in cmdline:
                break
            top, top_sid, top_uid, pid = pid, sid, uid, ppid
    except (OSError, IndexError, ValueError):
        return False
    return top is not None and top_sid == top and not lo <= top_uid < hi


def processes_with_arg(marker: str) -> list[int]:
    found = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


def rc_is(n):
    return lambda r: r.returncode == n


PRIVILEGE_DROP = ("dropped_privileges", "caps_dropped")  # a per-run uid (root) or no capabilities (user ns)
FAKE = json.dumps({"status": "ok", "stdout": "forged", "stderr": "", "returncode": 0})

# id, code, expected status (or tuple of acceptable ones), extra check, features needed (any), kwargs
HOSTILE = [
    ("infinite_loop", "while True: pass", "timeout", None, (), {}),
    ("sleep_forever", "import time; time.sleep(10**6)", "timeout", None, (), {}),
    ("output_then_hang", "print('partial', flush=True)\nwhile True: pass", "timeout",
     lambda r: r.stdout == "partial\n", (), {}),
    ("cpu_burn_threads", """
        import threading
        def burn():
            while True:
                pass
        for _ in range(4):
            threading.Thread(target=burn, daemon=True).start()
        burn()
     """, "timeout", None, (), {}),
    ("fork_bomb", "import os\nwhile True: os.fork()", "error", lambda r: "BlockingIOError" in r.stderr, (), {}),
    ("fork_bomb_resilient", """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
     """, "timeout", None, (), {}),
    ("subprocess_bomb", """
        import subprocess
        while True:
            subprocess.Popen(["sleep", "100"])
     """, "error", lambda r: "BlockingIOError" in r.stderr, (), {"timeout_s": 2.0}),
    ("thread_bomb", """
        import threading, time
        while True:
            threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
     """, "error", lambda r: "can't start new thread" in r.stderr, (), {}),
    ("memory_bytearray", "x = bytearray(10**11)", "memory", None, (), {}),
    ("memory_list_growth", "x = []\nwhile True: x.append(bytearray(10**7))", "memory", None, (), {"timeout_s": 3.0}),
    ("memory_string_doubling", "s = 'x'\nwhile True: s += s", "memory", None, (), {"timeout_s": 3.0}),
    ("deep_recursion_c_stack", """
        import json, sys
        sys.setrecursionlimit(10**9)
        json.loads("[" * 10**6 + "]" * 10**6)
     """, "error", rc_is(-signal.SIGSEGV), (), {}),
    ("deep_recursion_python", """
        import sys
        sys.setrecursionlimit(10**9)
        def f(n):
            return f(n + 1) + 1
        f(0)
     """, ("error", "memory"), None, (), {"timeout_s": 3.0, "memory_mb": 64}),
    ("stdout_flood", "while True: print('x' * 1000)", "output_limit",
     lambda r: len(r.stdout) == sb.STDOUT_CAP, (), {}),
    ("stderr_flood", "import sys\nwhile True: sys.stderr.write('e' * 4096)", "output_limit",
     lambda r: len(r.stderr) == sb.STDERR_CAP, (), {}),
    ("huge_single_line", "import sys\nwhile True: sys.stdout.write('y' * 10**6)", "output_limit",
     lambda r: "\n" not in r.stdout and len(r.stdout) == sb.STDOUT_CAP, (), {}),
    ("one_huge_write", "import os\nos.write(1, b'z' * (400 << 20))", "output_limit", None, (), {"timeout_s": 2.0}),
    ("fill_workdir", """
        for i in range(1000):
            with open(f"f{i}", "wb") as f:
                f.write(b"0" * (1 << 20))
     """, "error", lambda r: "No space left on device" in r.stderr, ("private_tmp",), {"timeout_s": 3.0}),
    ("inode_exhaustion", """
        for i in range(10**6):
            open(f"f{i}", "w").close()
     """, "error", lambda r: "No space left on device" in r.stderr, ("private_tmp",), {"timeout_s": 3.0}),
    ("big_file_in_workdir", """
        with open("big.bin", "wb") as f:
            while True:
                f.write(b"0" * (1 << 20))
     """, "error", lambda r: "File too large" in r.stderr, (), {}),
    ("many_fds", "fs = [open('/dev/null') for _ in range(10**5)]", "error",
     lambda r: "Too many open files" in r.stderr, (), {}),
    ("ignore_sigterm", "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass",
     "timeout", None, (), {}),
    ("ignore_every_signal", """
        import signal
        for s in signal.valid_signals():
            try:
                signal.signal(s, signal.SIG_IGN)
            except (OSError, ValueError, RuntimeError):
                pass
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            pass
     """, "timeout", None, (), {}),
    # as root the parent (init) is another uid: EPERM; in a user namespace pid 1 ignores the signal
    ("kill_parent", "import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(5)", ("error", "timeout"), None, (), {}),
    ("killpg_own_group", "import os\nprint('before', flush=True)\nos.killpg(0, 9)", "error",
     lambda r: r.returncode == -9 and r.stdout == "before\n", (), {}),
    ("kill_minus_one", """
        import os
        try:
            os.kill(-1, 9)
        except OSError:
            pass
        print('survived')
     """, "ok", lambda r: r.stdout == "survived\n", ("pid_namespace",), {}),
    ("kill_every_pid", """
        import os
        for pid in range(1, 1 << 15):
            if pid != os.getpid():
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        print('done')
     """, "ok", None, ("pid_namespace",), {"timeout_s": 3.0}),
    ("non_utf8_stdout", "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe\\x80 end\\n')", "ok",
     lambda r: r.stdout == "ok \ufffd\ufffd\ufffd end\n", (), {}),
    ("non_utf8_stderr_and_exit", "import os\nos.write(2, b'\\xc3\\x28 bad')\nos._exit(7)", "error",
     lambda r: r.stderr == "\ufffd( bad" and r.returncode == 7, (), {}),
    ("protocol_imitation", f"""
        import os, struct, sys
        fake = {FAKE!r}.encode()
        sys.stdout.buffer.write(struct.pack("!I", len(fake)) + fake + b"\\nS 0\\nE forged\\n")
        sys.stdout.flush()
        sys.stderr.write("S 0\\nE setup failed\\n")
        for fd in range(3, 256):
            try:
                os.write(fd, struct.pack("!I", len(fake)) + fake)
            except OSError:
                pass
        sys.exit(2)
     """, "error", lambda r: r.returncode == 2 and FAKE in r.stdout and r.stdout.endswith("E forged\n"), (), {}),
    ("sys_exit_3", "import sys\nsys.exit(3)", "error", rc_is(3), (), {}),
    ("raise_exception", "def f():\n    raise ValueError('boom')\nf()", "error",
     lambda r: r.returncode == 1 and "Traceback" in r.stderr and "ValueError: boom" in r.stderr
     and "sandbox.py" not in r.stderr, (), {}),
    ("os_exit_after_partial_output", "import os, sys\nsys.stdout.write('partial')\nsys.stdout.flush()\nos._exit(0)",
     "ok", lambda r: r.stdout == "partial", (), {}),
    ("os_exit_loses_buffered_output", "import os\nprint('lost')\nos._exit(0)", "ok", lambda r: r.stdout == "", (), {}),
    ("ctypes_segfault", "import ctypes\nctypes.string_at(0)", "error", rc_is(-signal.SIGSEGV), (), {}),
    ("close_all_fds", "import os\nos.closerange(0, 1025)\nx = sum(range(10**5))", "ok", None, (), {}),
    ("input_on_empty_stdin", "input()", "error", lambda r: "EOFError" in r.stderr, (), {}),
    ("setuid_root", "import os\nos.setuid(0)", "error", None, PRIVILEGE_DROP, {}),
    ("read_shadow", "print(open('/etc/shadow').read())", "error", None, PRIVILEGE_DROP, {}),
    ("chroot", "import os\nos.chroot('.')", "error", None, PRIVILEGE_DROP, {}),
    ("mount_tmpfs", """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0:
            raise OSError(ctypes.get_errno(), "mount")
     """, "error", None, PRIVILEGE_DROP, {}),
    ("nested_user_namespace", """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER: capabilities over new namespaces
            raise OSError(ctypes.get_errno(), "unshare")
     """, "error", lambda r: "OSError" in r.stderr, ("nested_userns_blocked",), {}),
]


@pytest.mark.parametrize("code,expected,check,needs,kw", [pytest.param(*c[1:], id=c[0]) for c in HOSTILE])
def test_hostile(iso, code, expected, check, needs, kw):
    if needs:
        need(iso, *needs)
    r = run(code, **kw)
    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert r.status in allowed, r
    if check is not None:
        assert check(r), r


def test_enough_hostile_cases():
    assert len(HOSTILE) >= 25


def test_daemon_does_not_outlive_the_run(iso):
    marker = f"{random.randint(10**6, 10**7)}.{random.randint(10**5, 10**6)}"  # a unique sleep argument
    r = run(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "{marker}"])  # keeps our stdout/stderr pipes open
            os._exit(0)
        time.sleep(0.3)
        print("parent done")
    """, timeout_s=3.0)
    assert r.status == "ok" and r.stdout == "parent done\n", r
    assert r.duration_s < 2.0, "a daemon holding the output pipes must not stall the run"
    assert processes_with_arg(marker) == []


def test_python_daemon_does_not_outlive_the_run(iso):
    r = run("""
        import os, time
        print(os.getuid(), flush=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for fd in range(3):
                    os.close(fd)
                time.sleep(10**6)
            os._exit(0)
        print("bye")
    """, timeout_s=2.0)
    assert r.status == "ok", r
    if iso.get("unique_uid"):  # every run has a uid of its own: nothing may be left running under it
        assert sandbox_uid_processes(iso, only_uid=int(r.stdout.split()[0])) == []


def test_sysv_shared_memory_does_not_leak(iso):
    need(iso, "ipc_namespace")
    segments = lambda: Path("/proc/sysvipc/shm").read_text().count("\n")  # noqa: E731
    before = segments()
    r = run("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.shmget(0, 1 << 20, 0o1000 | 0o600) >= 0)  # IPC_PRIVATE | IPC_CREAT, never removed
    """)
    assert r.status == "ok" and r.stdout == "True\n", r
    assert segments() == before


@pytest.mark.parametrize("where", ["/tmp", "/var/tmp", "/dev/shm", "/root", "/etc", "repo", "home"])
def test_cannot_write_outside_workdir(iso, where):
    if where in ("/tmp", "/var/tmp", "/dev/shm"):
        need(iso, "private_tmp")
    elif where == "home":
        need(iso, "host_paths_hidden", "dropped_privileges")
    else:
        need(iso, "dropped_privileges", "readonly_root")
    base = {"repo": str(REPO), "home": str(Path.home())}.get(where, where)
    if where == "home" and not os.access(base, os.W_OK):
        pytest.skip(f"home {base} is not writable by this user: nothing to protect")
    target = Path(base) / f"teachloop_escape_{uuid.uuid4().hex}"
    try:
        r = run(f"""
            try:
                with open({str(target)!r}, "w") as f:
                    f.write("pwned")
                print("wrote")
            except OSError as e:
                print("denied", e.errno)
        """)
        assert r.status == "ok", r
        assert not target.exists(), f"sandbox escaped to {target}"
    finally:
        target.unlink(missing_ok=True)


def test_cannot_remove_or_modify_host_file(iso, tmp_path):
    need(iso, "dropped_privileges", "readonly_root")
    victim = tmp_path / f".sandbox_victim_{uuid.uuid4().hex}"  # the caller's own file
    victim.write_text("precious")
    victim.chmod(0o644)
    try:
        r = run(f"""
            import os
            os.chdir("/")
            print(sorted(os.listdir("/"))[:3])
            results = []
            for attempt in (lambda: os.remove({str(victim)!r}), lambda: os.chmod({str(victim)!r}, 0o777),
                            lambda: open({str(victim)!r}, "a").write("x"),
                            lambda: os.rename({str(victim)!r}, {str(victim)!r} + ".moved")):
                try:
                    attempt()
                    results.append("done")
                except OSError:
                    results.append("denied")
            print(results)
        """)
        assert r.status == "ok", r
        assert "done" not in r.stdout
        assert victim.read_text() == "precious" and (victim.stat().st_mode & 0o777) == 0o644
    finally:
        victim.unlink(missing_ok=True)
        Path(str(victim) + ".moved").unlink(missing_ok=True)


def test_cannot_connect_to_host_loopback(iso):
    need(iso, "net_namespace")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        r = run(f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=0.5)
                print("connected")
            except OSError as e:
                print("blocked", e.errno)
        """)
        assert r.status == "ok" and r.stdout.startswith("blocked"), r
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_cannot_reach_external_network(iso):
    need(iso, "net_namespace")
    r = run("""
        import socket
        for host in ("1.1.1.1", "8.8.8.8"):
            try:
                socket.create_connection((host, 53), timeout=0.3)
                print("connected", host)
            except OSError:
                print("blocked")
        try:
            socket.getaddrinfo("example.com", 80)
            print("resolved")
        except OSError:
            print("blocked")
    """, timeout_s=2.0)
    assert r.status == "ok" and r.stdout == "blocked\n" * 3, r


def test_listening_socket_is_not_reachable_from_host(iso):
    need(iso, "net_namespace")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out: list[SandboxResult] = []
    t = threading.Thread(target=lambda: out.append(run(f"""
        import socket, time
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", {port}))
            s.listen()
            print("listening", flush=True)
        except OSError as e:
            print("bind failed", e.errno)
        time.sleep(1.0)
    """, timeout_s=3.0)))
    t.start()
    try:
        time.sleep(0.3)
        for _ in range(5):
            with socket.socket() as c:
                c.settimeout(0.2)
                assert c.connect_ex(("127.0.0.1", port)) != 0, "host reached a socket opened in the sandbox"
            time.sleep(0.1)
    finally:
        t.join()
    assert out and out[0].status == "ok", out


def test_environment_is_scrubbed(monkeypatch):
    secret = f"hunter2-{uuid.uuid4().hex}"
    monkeypatch.setenv("TEACHLOOP_SECRET", secret)
    sb.shutdown()  # the next zygote starts from this secret-bearing environment
    r = run(f"""
        import json, os
        print(json.dumps(dict(os.environ)))
        for path in ("/proc/self/environ", "/proc/1/environ", "/proc/{os.getpid()}/environ"):
            try:
                print(open(path, "rb").read())
            except OSError:
                print("denied")
    """, timeout_s=2.0)
    assert r.status == "ok", r
    env = json.loads(r.stdout.splitlines()[0])
    assert secret not in r.stdout and "TEACHLOOP_SECRET" not in env
    assert env["HOME"] == env["TMPDIR"] and not env["HOME"].startswith("/root")
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED", "PYTHONIOENCODING",
                        "PYTHONDONTWRITEBYTECODE", "USER", "LOGNAME"}


# ------------------------------------------------------------------------------ normal use
def test_print():
    r = run("print('hello', 6 * 7)")
    assert (r.status, r.stdout, r.stderr, r.returncode) == ("ok", "hello 42\n", "", 0)
    assert r.duration_s > 0


def test_stdin_echo():
    r = run("import sys\ndata = sys.stdin.read()\nprint(data.upper(), end='')", stdin="hello\nworld\n")
    assert r.status == "ok" and r.stdout == "HELLO\nWORLD\n", r


def test_stdin_empty():
    r = run("import sys\nprint(repr(sys.stdin.read()))")
    assert r.status == "ok" and r.stdout == "''\n", r


def test_large_stdin_roundtrip():
    data = "x" * (3 << 20)
    r = run("import sys\nprint(len(sys.stdin.read()))", stdin=data, timeout_s=2.0)
    assert r.status == "ok" and r.stdout == f"{len(data)}\n", r


def test_output_cap_is_exact():
    r = run("print('a' * 5000, end='')", stdout_cap=1000)
    assert r.status == "output_limit" and r.stdout == "a" * 1000, r
    r = run("print('a' * 1000, end='')", stdout_cap=1000)
    assert r.status == "ok" and r.stdout == "a" * 1000, r


def test_deterministic():
    code = "print(list({'apple', 'banana', 'cherry', 'date'}), hash('teachloop'), [id(None) > 0])"
    a, b = run(code), run(code)
    assert a.status == b.status == "ok" and a.stdout == b.stdout, (a, b)


def test_workdir_is_fresh_empty_and_home():
    r = run("import os\nprint(os.listdir('.'), os.environ['HOME'] == os.getcwd())\nopen('f', 'w').write('x')")
    assert r.status == "ok" and r.stdout == "[] True\n", r
    r = run("import os\nprint(os.listdir('.'))")
    assert r.stdout == "[]\n", r


def test_workdir_removed_afterwards():
    root = Path(tempfile.gettempdir())

    def count():
        return len(list(root.glob(sb.WORKDIR_PREFIX + "*")))

    before = count()
    r = run("""
        import os
        os.makedirs("a/b/c")
        open("a/b/c/f", "w").write("x")
        os.chmod("a/b", 0)
        os.symlink("/etc/passwd", "link")
        print("ok")
    """)
    assert r.status == "ok", r
    assert count() == before


def test_concurrent_calls_from_threads():
    def one(i):
        return i, run_python(f"import time\ntime.sleep(0.05)\nprint({i} * {i})", timeout_s=5.0)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(24)))
    for i, r in results:
        assert r.status == "ok" and r.stdout == f"{i * i}\n", r


def test_concurrent_runs_overlap():
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: run_python("import time\ntime.sleep(0.5)", timeout_s=5.0), range(8)))
    assert all(r.status == "ok" for r in results), results
    assert time.monotonic() - start < 2.5, "8 sleeping runs must not be serialised"


def test_zygote_restarts_after_being_killed(iso):
    old = sb.isolation()["zygote_pid"]
    os.kill(old, signal.SIGKILL)
    time.sleep(0.1)
    r = run("print('back')")
    assert r.status == "ok" and r.stdout == "back\n", r
    assert sb.isolation()["zygote_pid"] != old


def test_zygote_killed_during_a_run_gives_a_result():
    pid = sb.isolation()["zygote_pid"]
    out: list[SandboxResult] = []
    t = threading.Thread(target=lambda: out.append(run_python("import time\ntime.sleep(0.5)\nprint(1)", timeout_s=2)))
    t.start()
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=15)
    assert out and out[0].status == "ok" and out[0].stdout == "1\n", out  # supervisors outlive the zygote
    assert run("print(2)").stdout == "2\n"


def test_works_in_a_forked_caller():
    r_fd, w_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            res = run_python("print('from child')", timeout_s=2)
            os.write(w_fd, json.dumps([res.status, res.stdout, sb.isolation()["zygote_pid"]]).encode())
        finally:
            os._exit(0)
    os.close(w_fd)
    data = b"".join(iter(lambda: os.read(r_fd, 4096), b""))
    os.close(r_fd)
    os.waitpid(pid, 0)
    status, stdout, child_zygote = json.loads(data)
    assert (status, stdout) == ("ok", "from child\n")
    assert child_zygote != sb.isolation()["zygote_pid"]
    assert run("print('parent')").stdout == "parent\n"


def test_invalid_arguments():
    with pytest.raises(ValueError):
        run_python("pass", timeout_s=0)


def test_isolation_report(iso):
    for key in ("pid_namespace", "net_namespace", "mount_namespace", "private_tmp", "readonly_root",
                "user_namespace", "host_paths_hidden", "dropped_privileges", "caps_dropped", "no_new_privs",
                "isolated", "rlimits", "notes", "zygote_pid"):
        assert key in iso
    complete = all(iso[k] for k in sb.ISOLATION_REQUIRED) and (iso["dropped_privileges"] or iso["caps_dropped"])
    assert iso["isolated"] == complete
    assert bool(iso["notes"]) == (not complete), "missing isolation must be explained, and only missing isolation"
    if STRICT:
        assert iso["isolated"], iso["notes"]


# ------------------------------------------------------------- after the whole hostile suite
def processes_in_session(sid: int) -> list[int]:
    found = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            if _stat(int(d))[1] == sid:
                found.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return found


def test_no_stray_sandbox_processes_after_suite(iso):
    zygote = sb.isolation()["zygote_pid"]  # a session leader: its supervisors and their inits keep its sid
    sb.shutdown()  # idle spare sandboxes (already running as their uid) go away with the zygote
    deadline = time.monotonic() + 2
    while processes_in_session(zygote) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_in_session(zygote) == []
    if not iso.get("unique_uid"):
        return  # no per-run uid here: programs that left the session cannot be told apart from others

    def strays():  # sandbox-uid processes not belonging to another process's live zygote
        return [p for p in sandbox_uid_processes(iso) if not under_another_live_zygote(p, iso)]

    deadline = time.monotonic() + 2
    while strays() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert strays() == []


def test_zygote_still_works_after_suite():
    r = run("import math\nprint(math.factorial(20))")
    assert r.status == "ok" and r.stdout == "2432902008176640000\n", r
