"""Fixtures for the simulator tests: a fast simulated deployment per test module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ptu_verify.simulator import RunningSimulator, SimulatorConfig, start_simulator

# Fast generation so a test request takes milliseconds, not seconds.
FAST = {"speed_tps": 5000.0, "ttft_base_s": 0.005, "prefill_s_per_token": 0.0, "speed_jitter": 0.0}


def make_config(model: str = "qwen-plus-2025-04-28", ptu: int = 8, **knobs: Any) -> SimulatorConfig:
    """Return a fast configuration with deployment code ``<family>-test``."""
    settings = {**FAST, "seed": 1, **knobs}
    code = settings.pop("deployment_code", None)
    config = SimulatorConfig.for_model(model, ptu=ptu, deployment_code=code, **settings)
    if code is None:
        config.deployment_code = f"{config.family}-test"
    return config


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    """A qwen-plus simulator with 8 PTU and default limits."""
    with start_simulator(make_config()) as running:
        yield running


@pytest.fixture
def vl_sim() -> Iterator[RunningSimulator]:
    """A qwen-vl-plus simulator with 4 PTU."""
    with start_simulator(make_config("qwen-vl-plus-2025-05-07", ptu=4)) as running:
        yield running
