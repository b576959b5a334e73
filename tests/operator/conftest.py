"""The real Kopf runtime against kmock, an in-process Kubernetes API (see kmock_compat.py).

KUBECONFIG must be set before anything reads it (Kopf's login and the operator's client both do), so
pytest_configure points it at a port chosen here; each test gets a fresh, empty API on that port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
import yaml
from operator_harness import Emulator, Kube, Stores, new_emulator, operator_config
from raylight.operator.clients import RestKube
from raylight.operator.config import OperatorConfig
from support import free_port

API_PORT: int = 0




def pytest_configure(config: pytest.Config) -> None:
    global API_PORT
    API_PORT = free_port()
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": f"http://127.0.0.1:{API_PORT}"}}],
        "users": [{"name": "kmock", "user": {"token": "test"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": "default"}}],
    }
    fd, path = tempfile.mkstemp(prefix="raylight-kmock-", suffix=".kubeconfig")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(kubeconfig, f)
    os.environ["KUBECONFIG"] = path




@pytest_asyncio.fixture()
async def api() -> AsyncIterator[Emulator]:
    import kmock

    emulator = new_emulator()
    async with emulator, kmock.Server(emulator, port=API_PORT):
        yield emulator


@pytest.fixture()
def kube(api: Emulator) -> Kube:
    return Kube()


@pytest.fixture()
def stores() -> Stores:
    return Stores()


@pytest.fixture()
def start_operator(api: Emulator, stores: Stores) -> Callable[..., contextlib.AbstractAsyncContextManager[None]]:
    """`async with start_operator(): ...` runs Kopf (standalone, cluster-wide) until the block ends."""
    from raylight.operator.handlers import build_registry
    from raylight.operator.main import run

    @contextlib.asynccontextmanager
    async def running(config: OperatorConfig | None = None) -> AsyncIterator[None]:
        config = config or operator_config()
        registry = build_registry(config, kube=RestKube(timeout=5), stores=stores)
        # Kopf gets its own thread and loop: on exit it waits for every task of its loop, and the
        # API emulator's open watch streams live in the test's loop.
        stop, ready = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(run(config, registry, stop_flag=stop, ready_flag=ready))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="kopf", daemon=True)
        thread.start()
        assert await asyncio.to_thread(ready.wait, 15), f"the operator did not start: {errors}"
        try:
            yield
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 15)
            assert not thread.is_alive(), "the operator did not stop"
            assert not errors, errors

    return running
