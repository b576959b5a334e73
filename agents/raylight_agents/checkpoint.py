"""Thread memory: one LangGraph checkpointer per Pipeline.

PostgreSQL in a cluster (the DSN arrives in the environment variable that `ThreadsConnection.postgres_dsn_env`
names, so every replica and restart sees the same threads), SQLite on one machine
(`ThreadsConnection.sqlite_path`), and memory only when neither is configured (threads then
last as long as the replica; the log says so). Thread ids are namespaced by the pipeline's name,
so several pipelines can share one database. The PostgreSQL pool holds at most
`ThreadsConnection.pool_size` connections per replica (default 8).

`TurnLocks` lets one turn at a time run on a thread, across every replica that shares the thread store:
a lease row (thread, expiry) in the same database, so a second concurrent turn is refused (409) instead
of silently overwriting the first one's messages; a lease expires by itself if its replica dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from raylight.api.connections import ThreadsConnection

log = logging.getLogger(__name__)


def checkpoint_kind(threads: ThreadsConnection | None) -> str:
    """Which store the connection selects: postgres, sqlite or memory."""
    if threads is None:
        return "memory"
    if threads.postgres_dsn_env and os.environ.get(threads.postgres_dsn_env):
        return "postgres"
    if threads.sqlite_path:
        return "sqlite"
    return "memory"


@asynccontextmanager
async def open_checkpointer(threads: ThreadsConnection | None) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open (and create the tables of) the checkpointer that the ThreadsConnection selects."""
    threads = threads or ThreadsConnection()
    kind = checkpoint_kind(threads)
    async with AsyncExitStack() as stack:
        saver: BaseCheckpointSaver[Any]
        if kind == "postgres":
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                os.environ[threads.postgres_dsn_env or ""], min_size=1, max_size=threads.pool_size or 8,
                open=False, timeout=10,  # a request waits at most 10 s for a connection, then fails (503)
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

            path = Path(threads.sqlite_path or "")
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


class TurnLocks:
    """At most one turn per thread at a time, for every replica sharing `saver`'s database (PostgreSQL or
    SQLite: a lease table beside the checkpoints; InMemorySaver: this replica's memory). A lease lasts
    `ttl` seconds unless released first, so a replica that dies mid-turn blocks its thread only that long."""

    TABLE = "raylight_thread_turns"

    def __init__(self, saver: BaseCheckpointSaver[Any], ttl: float) -> None:
        self.saver = saver
        self.ttl = ttl
        self.kind = type(saver).__name__
        self.shared = self.kind in ("AsyncPostgresSaver", "AsyncSqliteSaver")  # else: this replica's memory
        self._local: dict[str, float] = {}

    async def _sql(self, statement: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement on the saver's database; the number of rows it changed."""
        conn = getattr(self.saver, "conn", None)
        if self.kind == "AsyncPostgresSaver":
            async with conn.connection() as pg:  # type: ignore[union-attr]
                cursor = await pg.execute(statement.replace("?", "%s"), params)
                return int(cursor.rowcount)
        async with self.saver.lock:  # type: ignore[attr-defined]  # AsyncSqliteSaver: one connection, shared
            async with conn.execute(statement, params) as cursor:  # type: ignore[union-attr]
                changed = int(cursor.rowcount)
            await conn.commit()  # type: ignore[union-attr]
            return changed

    async def setup(self) -> None:
        if self.shared:
            await self._sql(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (thread TEXT PRIMARY KEY, "
                            "until DOUBLE PRECISION)")

    async def acquire(self, thread: str) -> bool:
        """Take the thread's lease; False when another turn holds it."""
        now = time.time()
        if not self.shared:
            if self._local.get(thread, 0) > now:
                return False
            self._local[thread] = now + self.ttl
            return True
        changed = await self._sql(
            f"INSERT INTO {self.TABLE} (thread, until) VALUES (?, ?) ON CONFLICT (thread) DO UPDATE "
            f"SET until = excluded.until WHERE {self.TABLE}.until < ?", (thread, now + self.ttl, now))
        return changed > 0

    async def release(self, thread: str) -> None:
        if not self.shared:
            self._local.pop(thread, None)
            return
        await asyncio.shield(self._sql(f"DELETE FROM {self.TABLE} WHERE thread = ?", (thread,)))
