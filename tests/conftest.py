"""Shared fixtures. The loopback llama.cpp server (session-scoped) lives here."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a model hub in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    from server_utils import llama_cpp_server_available, start_llama_cpp_server
except ImportError:  # tests/ became a package
    from tests.server_utils import llama_cpp_server_available, start_llama_cpp_server


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """A real OpenAI-compatible server (llama-cpp-python) serving the embedded GGUF on loopback.

    Skips when llama_cpp's server extra is not installed: ``pip install 'llama-cpp-python[server]'``.
    """
    if not llama_cpp_server_available():
        pytest.skip("llama-cpp-python[server] not installed (pip install 'llama-cpp-python[server]')")
    from teachloop.agents.embedded import embedded_gguf_path

    server = start_llama_cpp_server(embedded_gguf_path(), tmp_path_factory.mktemp("llama_server"))
    print(f"\nllama_cpp.server pid {server.pid} healthy on port {server.port} in {server.start_seconds:.1f} s")
    yield server
    server.stop()


try:
    import pg_cluster
except ImportError:  # tests/ became a package
    from tests import pg_cluster


@pytest.fixture(scope="session")
def pg_server():
    """A throw-away PostgreSQL cluster on 127.0.0.1 for the session (tests/pg_cluster.py);
    skips with the reason when the server binaries or psycopg are missing."""
    reason = pg_cluster.why_not()
    if reason:
        pytest.skip(reason)
    cluster = pg_cluster.start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_pool_url(request, tmp_path_factory):
    """A factory of fresh, empty pool URLs, once per dialect: a new SQLite file, or a new
    schema in the session's PostgreSQL cluster (the URL sets its search_path)."""
    if request.param == "sqlite":
        return lambda: str(tmp_path_factory.mktemp("pool") / "pool.sqlite")
    server = request.getfixturevalue("pg_server")
    return server.new_schema
