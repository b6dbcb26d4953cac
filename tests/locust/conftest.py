"""Fixtures for the Locust tests: simulators on 127.0.0.1 port 0 with a fake key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from locust_helpers import DEPLOYMENT, FAKE_KEY


@pytest.fixture
def simulator() -> Iterator[Callable[..., Any]]:
    """Return a factory that starts simulators (qwen-plus, fake key, short limiter window); all stop at teardown."""
    from ptu_verify.simulator import SimulatorConfig, start_simulator

    running: list[Any] = []

    def start(model: str = "qwen-plus-2025-04-28", ptu: int = 8, **knobs: Any) -> Any:
        knobs.setdefault("api_key", FAKE_KEY)
        knobs.setdefault("seed", 1)
        config = SimulatorConfig.for_model(model, ptu=ptu, deployment_code=DEPLOYMENT, **knobs)
        sim = start_simulator(config)
        running.append(sim)
        return sim

    yield start
    for sim in running:
        sim.stop()
