"""Simulated PTU deployment: an HTTP server speaking the Bailian APIs with PTU throttling.

    from ptu_verify.simulator import SimulatorConfig, start_simulator

    config = SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, seed=1)
    with start_simulator(config) as sim:
        sim.openai_base_url, sim.dashscope_base_url, sim.stats()
"""

from __future__ import annotations

from .config import FAULT_NAMES, FaultWindow, SimulatorConfig, load_config_file
from .runner import RunningSimulator, serve_forever, start_simulator

__all__ = ["FAULT_NAMES", "FaultWindow", "RunningSimulator", "SimulatorConfig", "load_config_file", "serve_forever", "start_simulator"]
