"""Linux namespace setup for :mod:`teachloop.evals.sandbox` (one concept: the sandbox's view of
the machine).  Loaded by the zygote by file path, so it imports only the standard library.

Two ways in, same result:
    root      the process already holds CAP_SYS_ADMIN: it unshares the namespaces directly and
              the program later drops to a per-run uid.
    any user  ``enter_user_namespace`` first: a new user namespace mapping the caller's uid and
              gid to themselves (the one mapping an unprivileged process may write, as
              ``unshare --user`` does), which grants capabilities over the namespaces created
              from it; the program then drops every capability (``drop_capabilities``) and may
              not create nested user namespaces (``user.max_user_namespaces`` = 0 inside).

``isolate`` then enters new mount, network, IPC and UTS namespaces and builds a new root
(``pivot_root``, as bubblewrap does): a small read-only tmpfs holding read-only binds of the
system directories (/usr, /lib*, a few /etc files, five /dev nodes) and of the Python install
and its sys.path; a fresh /proc of the run's PID namespace; a size-limited tmpfs on /tmp, also
seen at /var/tmp and /dev/shm, as the only writable place.  Home directories, the repository,
/sys, /run and everything else of the host are simply absent.  The host root is detached.
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER = 0x20000, 0x4000000, 0x8000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 24, 36, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}.get(platform.machine())
LINUX_CAPABILITY_VERSION_3 = 0x20080522

PRIVATE_WORKDIR = "/tmp/work"  # the program's working directory inside the private /tmp
WORKDIR_MB = 64  # size of the private tmpfs on /tmp
WORKDIR_MAX_FILES = 16384  # inodes of that tmpfs
NEW_ROOT = "/tmp"  # where the new root is assembled (in the private mount namespace) before pivot_root
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf",
             "alternatives", "ssl", "mime.types", "os-release")
DEV_NODES = ("null", "zero", "full", "random", "urandom")


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def prctl(option: int, arg: int, arg2: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           "prctl")


class _MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def _mount_setattr(path: str, set_: int, clr: int, recursive: bool) -> None:  # Linux >= 5.12
    attr = _MountAttr(set_, clr, 0, 0)
    args = (ctypes.c_long(AT_FDCWD), ctypes.c_char_p(path.encode()), ctypes.c_long(AT_RECURSIVE if recursive else 0),
            ctypes.byref(attr), ctypes.c_long(ctypes.sizeof(attr)))
    _check(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), *args), f"mount_setattr {path}")


def readonly_root() -> None:
    """Every mount below / read-only, recursively; mounts added afterwards stay writable."""
    _mount_setattr("/", MOUNT_ATTR_RDONLY, 0, recursive=True)


# ------------------------------------------------------------------------ user namespaces
def enter_user_namespace() -> None:
    """Unshare a user namespace mapping our uid and gid to themselves.  The calling process
    (single-threaded) gets every capability inside it, over the namespaces it creates next."""
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER)
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def userns_unavailable_reason() -> str:
    """The likely reason creating a user namespace failed here, from the kernel's switches."""
    for path, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"), ("/proc/sys/user/max_user_namespaces", "0"),
                      ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1")):
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    return f"{path.replace('/proc/sys/', '').replace('/', '.')} = {bad}"
        except OSError:
            pass
    return "the kernel or a security module refuses them"


def forbid_nested_user_namespaces() -> None:
    """In our own user namespace: the program may create no user namespace below it (its
    capabilities there would reopen mount/network tricks).  Needs the run's fresh /proc."""
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets (capset(2))."""
    for cap in range(64):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            if cap == 0:
                raise
            break  # EINVAL: past the kernel's last capability
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(_CapHeader(LINUX_CAPABILITY_VERSION_3, 0)), data), "capset")


# ---------------------------------------------------------------------------- the new root
def plan_binds(python_paths: list[str]) -> dict:
    """What the new root holds, decided once in the zygote: {"links": [(path, target)],
    "binds": [host paths bound at the same place], "tmp_binds": [those under /tmp]}."""
    links, binds = [], []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            links.append((d, os.readlink(d)))
        elif os.path.isdir(d):
            binds.append(d)
    binds += [p for p in (os.path.join("/etc", f) for f in ETC_FILES) if os.path.exists(p)]
    covered = [os.path.realpath(b) for b in binds]
    for p in python_paths:
        real = os.path.realpath(p)
        parts = p.split("/")
        for i in range(2, len(parts) + 1):  # a symlinked ancestor (/home -> /data/home): recreate the link
            c = "/".join(parts[:i])
            if os.path.islink(c) and not any(c.startswith(x + "/") for x in covered):
                if c not in dict(links):
                    links.append((c, os.readlink(c)))
                break
        if not any(real == c or real.startswith(c + "/") for c in covered) and real != "/":
            binds.append(real)
            covered.append(real)
    binds = sorted(set(binds))
    binds = [b for b in binds if not any(b.startswith(o + "/") for o in binds)]  # outermost only
    tmp = [b for b in binds if b.startswith("/tmp/")]
    links = [(p, t) for p, t in links if not any(p.startswith(b + "/") for b in binds)]  # inside a bind already
    return {"links": links, "binds": [b for b in binds if b not in tmp], "tmp_binds": tmp}


def _symlink(target: str, path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    os.symlink(target, path)


def _mountpoint(path: str, fd: int) -> None:
    """An empty directory or file at `path`, like the object open as `fd`, to bind it over."""
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        os.makedirs(path, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def build_root(plan: dict, uid: int, with_proc: bool) -> dict:
    """Assemble the new root in this (already private) mount namespace and pivot into it.
    Returns {"proc_remounted": bool}.  Raises OSError on anything else."""
    fds = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in (*plan["binds"], *plan["tmp_binds"])}
    devs = {n: os.open(f"/dev/{n}", os.O_PATH | os.O_CLOEXEC) for n in DEV_NODES if os.path.exists(f"/dev/{n}")}
    try:
        new = NEW_ROOT
        mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m,nr_inodes=4096")
        for path, target in plan["links"]:
            if not path.startswith("/tmp/"):
                _symlink(target, new + path)
        for path in plan["binds"]:
            _mountpoint(new + path, fds[path])
            mount(f"/proc/self/fd/{fds[path]}", new + path, None, MS_BIND | MS_REC)
        for d in ("/proc", "/tmp", "/var/tmp", "/dev"):
            os.makedirs(new + d, mode=0o755, exist_ok=True)
        mount("tmpfs", new + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={WORKDIR_MB}m,nr_inodes={WORKDIR_MAX_FILES},mode=700,uid={uid},gid={uid}")
        for path in plan["tmp_binds"]:  # a Python living under /tmp (CI clones) stays visible
            _mountpoint(new + path, fds[path])
            mount(f"/proc/self/fd/{fds[path]}", new + path, None, MS_BIND | MS_REC)
        for path, target in plan["links"]:
            if path.startswith("/tmp/"):
                _symlink(target, new + path)
        mount("tmpfs", new + "/dev", "tmpfs", MS_NOSUID, "mode=755,size=64k")
        for name, fd in devs.items():
            _mountpoint(f"{new}/dev/{name}", fd)
            mount(f"/proc/self/fd/{fd}", f"{new}/dev/{name}", None, MS_BIND)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2")):
            os.symlink(target, f"{new}/dev/{name}")
        os.mkdir(new + "/dev/shm", 0o755)
        for target in ("/var/tmp", "/dev/shm"):
            mount(new + "/tmp", new + target, None, MS_BIND)
        got = {"proc_remounted": False}
        if with_proc:  # before the host's /proc goes: a user namespace may only mount a proc it can see
            try:
                mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                got["proc_remounted"] = True
            except OSError:
                pass  # e.g. a container masking parts of /proc: no /proc at all, rather than the host's
    finally:
        for fd in (*fds.values(), *devs.values()):
            os.close(fd)
    os.chdir(new)
    _check(_libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT), b".", b"."), "pivot_root")  # old root now on top
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    readonly_root()
    for writable in ("/tmp", "/var/tmp", "/dev/shm", "/proc")[: 4 if got["proc_remounted"] else 3]:
        _mount_setattr(writable, 0, MOUNT_ATTR_RDONLY, recursive=False)
    os.mkdir(PRIVATE_WORKDIR, 0o700)  # the program's cwd: empty even when Python is bound in /tmp
    os.chown(PRIVATE_WORKDIR, uid, uid)
    return got


def isolate(plan: dict, binds: dict, uid: int, probe: bool = False) -> dict:
    """Enter new mount/net/IPC/UTS namespaces and build the new root.  In probe mode try
    everything and report what worked; otherwise do exactly what `plan` says or raise."""
    got: dict = {}

    def step(name, fn, needs=()):
        ok = all({**plan, **got}.get(n) for n in needs) and (probe or bool(plan.get(name)))
        if ok:
            try:
                fn()
            except OSError:
                if not probe:
                    raise
                ok = False
        got[name] = ok

    step("mount_namespace", lambda: (unshare(CLONE_NEWNS), mount(None, "/", None, MS_REC | MS_PRIVATE)))
    step("net_namespace", lambda: unshare(CLONE_NEWNET))
    step("ipc_namespace", lambda: unshare(CLONE_NEWIPC))
    step("uts_namespace", lambda: (unshare(CLONE_NEWUTS), socket.sethostname("sandbox")))
    root: dict = {}
    step("host_paths_hidden", lambda: root.update(build_root(binds, uid, bool(plan.get("pid_namespace")))),
         needs=("mount_namespace",))
    hidden = got["host_paths_hidden"]
    got.update(readonly_root=hidden, private_tmp=hidden, python_exposed=hidden,
               proc_remounted=hidden and root.get("proc_remounted", False))
    if not probe and plan.get("proc_remounted") and not got["proc_remounted"]:
        raise OSError("could not mount /proc for the run's PID namespace")
    if plan.get("user_namespace"):
        step("nested_userns_blocked", forbid_nested_user_namespaces, needs=("proc_remounted",))
    return got
