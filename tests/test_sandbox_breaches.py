"""The breaches of issue 15, one hostile program each (DESIGN.md, "As any user, not only root").

Measured as uid 65534 before user namespaces were used, generated code: left files in /tmp,
/var/tmp, /dev/shm and the home directory; reached a 127.0.0.1 service; read the caller's 0600
file; killed every process of the user, the caller included.  Each test below starts the
victim itself (listener, sibling process, private file) and checks the host side afterwards.
tests/test_sandbox_unprivileged.py runs this file again as uid 65534 with SANDBOX_TESTS_STRICT=1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from teachloop.evals import sandbox as sb
from teachloop.evals.sandbox import isolation, run_python

STRICT = os.environ.get("SANDBOX_TESTS_STRICT") == "1"


@pytest.fixture(scope="module")
def iso() -> dict:
    return isolation()


def need(iso: dict, *features: str) -> None:
    if not any(iso.get(f) for f in features):
        if STRICT:
            pytest.fail(f"isolation lacks {' / '.join(features)} (SANDBOX_TESTS_STRICT=1): {iso['notes']}")
        pytest.skip(f"isolation lacks {' / '.join(features)} here: running this would touch the host")


def run(code: str, timeout_s: float = 3.0) -> sb.SandboxResult:
    r = run_python(textwrap.dedent(code), timeout_s=timeout_s)
    assert r.duration_s <= timeout_s + 1.0, r
    return r


def test_loopback_services_are_not_reached(iso):
    need(iso, "net_namespace")
    abstract = f"\0teachloop-{uuid.uuid4().hex}"
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_UNIX) as unix:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        unix.bind(abstract)  # abstract unix sockets belong to the network namespace, not the filesystem
        unix.listen()
        for s in (tcp, udp, unix):
            s.setblocking(False)
        r = run(f"""
            import socket
            results = []
            for family, addr in ((socket.AF_INET, ("127.0.0.1", {tcp.getsockname()[1]})),
                                 (socket.AF_INET, ("localhost", {tcp.getsockname()[1]})),
                                 (socket.AF_UNIX, {abstract!r})):
                try:
                    with socket.socket(family) as c:
                        c.settimeout(0.5)
                        c.connect(addr)
                    results.append("connected")
                except OSError:
                    results.append("blocked")
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.sendto(b"hello", ("127.0.0.1", {udp.getsockname()[1]}))
            except OSError:
                pass
            print(results)
        """)
        time.sleep(0.1)
        assert r.status == "ok" and r.stdout == "['blocked', 'blocked', 'blocked']\n", r
        for s in (tcp, unix):
            with pytest.raises(BlockingIOError):
                s.accept()  # 0 connections reached the listener
        with pytest.raises(BlockingIOError):
            udp.recv(64)


def test_killing_every_visible_process_spares_the_caller(iso):
    need(iso, "pid_namespace", "dropped_privileges")
    sibling = subprocess.Popen(["sleep", "60"])  # another process of the caller's user
    zygote = isolation()["zygote_pid"]
    try:
        r = run("""
            import os, signal
            seen = [int(p) for p in os.listdir("/proc") if p.isdigit()]
            for pid in range(1, 1 << 16):
                if pid != os.getpid():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            print(len(seen), "visible")
        """, timeout_s=5.0)
        assert r.status == "ok" and r.stdout.endswith("visible\n"), r
        time.sleep(0.1)
        assert sibling.poll() is None, "the caller's sibling process was killed"
        os.kill(zygote, 0)  # still alive (raises ProcessLookupError otherwise)
        assert isolation()["zygote_pid"] == zygote and run("print('next')").stdout == "next\n"
    finally:
        sibling.kill()
        sibling.wait()


def test_callers_private_file_is_not_read(iso, tmp_path):
    need(iso, "host_paths_hidden", "dropped_privileges")
    secret = f"secret-{uuid.uuid4().hex}"
    places = [tmp_path / "token"]
    if os.access(Path.home(), os.W_OK):
        places.append(Path.home() / f".teachloop_secret_{uuid.uuid4().hex}")
    try:
        for p in places:
            p.write_text(secret)
            p.chmod(0o600)
        paths = [str(p) for p in places]
        paths += [f"/proc/{os.getpid()}/root{p}" for p in paths] + [f"/proc/{os.getpid()}/environ"]
        r = run(f"""
            import os
            for path in {paths!r}:
                try:
                    print(path, open(path).read())
                except OSError as e:
                    print(path, "denied", e.errno)
            for root, dirs, files in os.walk("/"):  # nothing named like the file anywhere
                dirs[:] = [d for d in dirs if not (root == "/" and d in ("proc", "sys"))]
                for f in files:
                    if "teachloop_secret" in f or f == "token":
                        print("found", os.path.join(root, f))
        """, timeout_s=10.0)
        assert r.status == "ok", r
        assert secret not in r.stdout + r.stderr, "the program read the caller's 0600 file"
        assert "found" not in r.stdout, r.stdout
    finally:
        for p in places:
            p.unlink(missing_ok=True)


def test_no_files_left_on_the_host(iso):
    need(iso, "private_tmp")
    name = f"teachloop_left_{uuid.uuid4().hex}"
    home = Path.home()
    places = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), home]
    r = run(f"""
        import os
        for d in {[str(p) for p in places]!r}:
            try:
                with open(os.path.join(d, {name!r}), "w") as f:
                    f.write("left behind")
                os.makedirs(os.path.join(d, {name!r} + ".d"), exist_ok=True)
                print(d, "written")
            except OSError as e:
                print(d, "denied", e.errno)
    """)
    assert r.status == "ok", r
    left = [str(p / n) for p in places for n in (name, name + ".d") if (p / n).exists()]
    for p in left:
        Path(p).unlink() if Path(p).is_file() else Path(p).rmdir()
    assert left == [], f"the program left files on the host: {left}"


def test_require_isolation(iso, monkeypatch):
    monkeypatch.setattr(sb, "_require", None)  # whatever an earlier test's run config set
    monkeypatch.delenv("TEACHLOOP_REQUIRE_ISOLATION", raising=False)
    assert sb.require_isolation() is False
    monkeypatch.setenv("TEACHLOOP_REQUIRE_ISOLATION", "1")
    assert sb.require_isolation() is True
    try:
        sb.set_require_isolation(False)  # the explicit setting wins over the environment
        assert sb.require_isolation() is False
        sb.set_require_isolation(True)
        if iso["isolated"]:
            assert run("print('allowed')").stdout == "allowed\n"
        else:
            with pytest.raises(sb.IsolationUnavailable, match="refusing"):
                run_python("print('must not run')")
    finally:
        sb.set_require_isolation(None)
