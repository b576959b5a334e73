"""Thread memory: one LangGraph checkpointer per Pipeline.

PostgreSQL in a cluster (the DSN arrives in the environment variable that connections["threads"]
names, so every replica and restart sees the same threads), SQLite on one machine
(connections["threads"]["sqlite_path"]), and memory only when neither is configured (threads then
last as long as the replica; `describe()` says so). Thread ids are namespaced by the pipeline's name,
so several pipelines can share one database.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

log = logging.getLogger(__name__)


def checkpoint_kind(threads: dict[str, Any] | None) -> str:
    """Which store the connection selects: postgres, sqlite or memory."""
    threads = threads or {}
    dsn_env = threads.get("postgres_dsn_env")
    if dsn_env and os.environ.get(dsn_env):
        return "postgres"
    if threads.get("sqlite_path"):
        return "sqlite"
    return "memory"


@asynccontextmanager
async def open_checkpointer(threads: dict[str, Any] | None) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open (and create the tables of) the checkpointer that connections["threads"] selects."""
    threads = threads or {}
    kind = checkpoint_kind(threads)
    async with AsyncExitStack() as stack:
        saver: BaseCheckpointSaver[Any]
        if kind == "postgres":
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                os.environ[threads["postgres_dsn_env"]], min_size=1, max_size=8, open=False,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
                check=AsyncConnectionPool.check_connection,  # survive a database restart
            )
            await pool.open(wait=True, timeout=15)
            stack.push_async_callback(pool.close)
            saver = AsyncPostgresSaver(pool)
            await saver.setup()
        elif kind == "sqlite":
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            path = Path(threads["sqlite_path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(str(path))
            stack.push_async_callback(conn.close)
            await conn.execute("PRAGMA journal_mode=WAL")  # readers (history) do not block the writer
            saver = AsyncSqliteSaver(conn)
            await saver.setup()
        else:
            log.warning("no thread store configured: threads live in this replica's memory only")
            saver = InMemorySaver()
        yield saver


def describe(threads: dict[str, Any] | None) -> str:
    kind = checkpoint_kind(threads)
    if kind == "sqlite":
        return f"sqlite:{(threads or {}).get('sqlite_path')}"
    return kind
