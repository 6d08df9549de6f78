"""Fixtures of the container suite: the Docker engine, and one compose stack for the session.

The engine is started only when its socket doesn't answer, and then stopped again at the end,
by its pid. The stack is removed with `down -v` at the end, whatever the tests did to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dev_stack import docker_engine
from dev_stack.containers import RunningStack, start_stack


@pytest.fixture(scope="session")
def engine() -> Iterator[None]:
    started = docker_engine.start()
    try:
        yield
    finally:
        if started is not None:
            docker_engine.stop(started)


@pytest.fixture(scope="session")
def stack(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("compose"))
    try:
        yield running
    finally:
        running.stack.down(timeout_s=60)
