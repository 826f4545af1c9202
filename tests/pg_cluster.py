"""A throw-away PostgreSQL cluster for tests: ``initdb`` in a temp dir, ``pg_ctl start`` on a
free port on 127.0.0.1 (no Unix socket), stopped and deleted at the end.

PostgreSQL refuses to run as root; from root the server binaries run as an unprivileged uid
(65534, "nobody", through ``setpriv``, as tests/as_unprivileged.py does), which owns the data
directory. Run by an ordinary user they run as that user. Durability is off (``fsync``,
``synchronous_commit``, ``full_page_writes``): the cluster lives for one test session.

``why_not()`` says why no cluster can start here (no server binaries, no way to drop root), or
None. The binaries are looked up on PATH, then in Debian's /usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

NOBODY = 65534


def pg_bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and Path(found).with_name("initdb").exists():
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2])
                  if d.split("/")[-2].isdigit() else 0)
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def why_not() -> str | None:
    if pg_bin_dir() is None:
        return ("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
                "/usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root and setpriv (util-linux) is missing: cannot start postgres as another user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed (pip install 'teachloop[postgres]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One running cluster; ``url(db)`` for a database, ``new_database()`` for a fresh one."""

    def __init__(self) -> None:
        self.bin = pg_bin_dir()
        assert self.bin is not None, why_not()
        self.root = Path(tempfile.mkdtemp(prefix="teachloop-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.user = "postgres"
        if os.geteuid() == 0:
            os.chown(self.root, NOBODY, NOBODY)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                   "-E", "UTF8", "--no-locale", "--no-sync"])
        for attempt in range(3):  # a free port can be taken between the probe and the start
            self.port = _free_port()
            opts = (f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=off -c synchronous_commit=off "
                    "-c full_page_writes=off -c max_connections=200")
            r = self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                           "-t", "60", "-o", opts, "start"], check=False)
            if r.returncode == 0:
                break
        else:
            tail = self.log.read_text()[-500:] if self.log.exists() else r.stderr
            self.stop()
            raise RuntimeError(f"pg_ctl start failed: {tail}")

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(_as_server_user() + cmd, cwd=self.root, capture_output=True, text=True,
                           timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {(r.stderr or r.stdout).strip()[-500:]}")
        return r

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def new_database(self, prefix: str = "t") -> str:
        """CREATE DATABASE under a fresh name (about 20 ms); returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def new_schema(self, prefix: str = "pool") -> str:
        """A fresh schema in the ``postgres`` database; returns a URL whose ``search_path``
        is that schema, so a pool opened on it sees only its own tables. Cheaper than a
        database per pool (CREATE DATABASE copies ~7 MB)."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{name}"')
        return self.url() + f"?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                       "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgCluster:
    t0 = time.monotonic()
    c = PgCluster()
    c.start_seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    return c
