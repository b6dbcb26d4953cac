"""The ptu-verify locustfile with a workload that burns 80 ms of CPU per request.

At 20 requests per second that is 1.6 s of CPU per second, so the generator cannot keep its schedule.
"""

from __future__ import annotations

import time
from typing import Any

from locust import events

from loadtest.locustfile import PTUUser
from loadtest.users import current_session
from ptu_verify.requests import RequestSpec

__all__ = ["PTUUser"]

BURN_S = 0.08


@events.test_start.add_listener
def make_workload_heavy(**_kwargs: Any) -> None:
    session = current_session()
    assert session is not None, "the ptu-verify test_start handler must run first"
    build = session.workload.next_request

    def burning_next_request() -> RequestSpec:
        until = time.perf_counter() + BURN_S
        while time.perf_counter() < until:
            pass
        return build()

    session.workload.next_request = burning_next_request  # type: ignore[method-assign]
