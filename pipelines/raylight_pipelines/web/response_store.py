"""Where `/v1/responses` keeps stored responses, shared by every replica: SQLite on one machine, PostgreSQL on a
cluster, memory only when neither is configured (one replica's; the log says so).

A record is `{"id", "owner", "expires_at", "messages", "response"}` (JSON): the conversation up to and including
the response's output as chat messages (what `previous_response_id` continues), and the response object that
`GET /v1/responses/{id}` returns. `owner` is who created it (None for an anonymous caller): anyone else gets
None back, as if it did not exist. Records expire `retention_seconds` after they are written; expired rows
are never returned and are deleted as new ones arrive.

`open_store(url, retention_seconds)`: `postgresql://...` (or `postgres://`), `sqlite:///path` or a plain
path, `memory:` / None. Errors reaching the database raise `StoreUnavailable` (a 503 for the route).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from raylight.api.connections import ResponseStoreConnection

log = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 30 * 24 * 3600  # OpenAI keeps stored responses 30 days
TABLE = "raylight_responses"


class StoreUnavailable(RuntimeError):
    """The response store does not answer."""


class ResponseStore(Protocol):
    kind: str

    async def put(self, record: dict[str, Any]) -> None: ...

    async def get(self, response_id: str, owner: str | None) -> dict[str, Any] | None: ...

    async def delete(self, response_id: str, owner: str | None) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    kind = "memory"

    def __init__(self, retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.retention = retention_seconds
        self.rows: dict[str, dict[str, Any]] = {}

    async def put(self, record: dict[str, Any]) -> None:
        now = time.time()
        self.rows = {k: v for k, v in self.rows.items() if v["expires_at"] > now}
        self.rows[record["id"]] = {**record, "expires_at": now + self.retention}

    async def get(self, response_id: str, owner: str | None) -> dict[str, Any] | None:
        row = self.rows.get(response_id)
        if row is None or row["expires_at"] <= time.time() or row["owner"] != owner:
            return None
        return row

    async def delete(self, response_id: str, owner: str | None) -> bool:
        if await self.get(response_id, owner) is None:
            return False
        del self.rows[response_id]
        return True

    async def aclose(self) -> None:
        return None


class SqliteStore:
    """One SQLite file (WAL), shared by the processes of one machine."""

    kind = "sqlite"

    def __init__(self, path: str, retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.path = path
        self.retention = retention_seconds
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, owner TEXT, "
                         "expires_at REAL NOT NULL, body TEXT NOT NULL)")
            self._conn = conn
        return self._conn

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return list(self._connect().execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"the response store (sqlite) failed: {exc}") from exc

    async def put(self, record: dict[str, Any]) -> None:
        now = time.time()
        await asyncio.to_thread(self._run, f"DELETE FROM {TABLE} WHERE expires_at <= ?", (now,))
        await asyncio.to_thread(self._run, f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?)",
                                (record["id"], record["owner"], now + self.retention, json.dumps(record)))

    async def get(self, response_id: str, owner: str | None) -> dict[str, Any] | None:
        rows = await asyncio.to_thread(self._run, f"SELECT owner, body FROM {TABLE} WHERE id = ? AND expires_at > ?",
                                       (response_id, time.time()))
        if not rows or rows[0][0] != owner:
            return None
        found: dict[str, Any] = json.loads(rows[0][1])
        return found

    async def delete(self, response_id: str, owner: str | None) -> bool:
        if await self.get(response_id, owner) is None:
            return False
        await asyncio.to_thread(self._run, f"DELETE FROM {TABLE} WHERE id = ?", (response_id,))
        return True

    async def aclose(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresStore:
    """One table in PostgreSQL, shared by every replica of a cluster (a small connection pool per replica)."""

    kind = "postgres"

    def __init__(self, dsn: str, retention_seconds: float = DEFAULT_RETENTION_SECONDS, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.retention = retention_seconds
        self.pool_size = pool_size
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def _open(self) -> Any:
        async with self._opening:
            if self._pool is None:
                from psycopg_pool import AsyncConnectionPool

                pool: Any = AsyncConnectionPool(self.dsn, min_size=1, max_size=self.pool_size, open=False,
                                                timeout=10, kwargs={"autocommit": True})
                await pool.open(wait=True, timeout=10)
                async with pool.connection() as conn:
                    await conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, owner TEXT, "
                                       "expires_at DOUBLE PRECISION NOT NULL, body JSONB NOT NULL)")
                self._pool = pool
        return self._pool

    async def _run(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            pool = await self._open()
            async with pool.connection() as conn:
                cur = await conn.execute(sql, args)
                return list(await cur.fetchall()) if cur.description else []
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"the response store (postgres) failed: {type(exc).__name__}") from exc

    async def put(self, record: dict[str, Any]) -> None:
        now = time.time()
        await self._run(f"DELETE FROM {TABLE} WHERE expires_at <= %s", (now,))
        await self._run(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                        "owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, body = EXCLUDED.body",
                        (record["id"], record["owner"], now + self.retention, json.dumps(record)))

    async def get(self, response_id: str, owner: str | None) -> dict[str, Any] | None:
        rows = await self._run(f"SELECT owner, body::text FROM {TABLE} WHERE id = %s AND expires_at > %s",
                               (response_id, time.time()))
        if not rows or rows[0][0] != owner:
            return None
        found: dict[str, Any] = json.loads(rows[0][1])
        return found

    async def delete(self, response_id: str, owner: str | None) -> bool:
        if await self.get(response_id, owner) is None:
            return False
        await self._run(f"DELETE FROM {TABLE} WHERE id = %s", (response_id,))
        return True

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def open_connection(conn: ResponseStoreConnection | None) -> ResponseStore:
    """The store a `ResponseStoreConnection` selects: PostgreSQL when its DSN variable is set, else SQLite at
    `sqlite_path`, else memory (logged)."""
    conn = conn or ResponseStoreConnection()
    dsn = os.environ.get(conn.postgres_dsn_env) if conn.postgres_dsn_env else None
    if dsn:
        return PostgresStore(dsn, conn.retention_seconds)
    if conn.sqlite_path:
        return SqliteStore(conn.sqlite_path, conn.retention_seconds)
    return open_store(None, conn.retention_seconds)


def open_store(url: str | None, retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> ResponseStore:
    """The store `url` names (see the module docstring); raises ValueError for a scheme it does not know."""
    if url is None or url in ("", "memory:"):
        log.warning("responses are stored in this replica's memory only: previous_response_id works on this "
                    "replica until it restarts (configure SQLite or PostgreSQL to share them)")
        return MemoryStore(retention_seconds)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, retention_seconds)
    if url.startswith("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite://"), retention_seconds)
    if "://" in url:
        raise ValueError(f"response store: unknown scheme in {url.split('://')[0]!r}; use postgresql://, "
                         "sqlite:/// or a file path")
    return SqliteStore(url, retention_seconds)
