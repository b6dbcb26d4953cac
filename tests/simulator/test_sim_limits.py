"""PTU limits: the meters with a fake clock, 429 codes in both APIs, and throttling at 1.5 × capacity."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import httpx
import pytest
from conftest import make_config

from ptu_verify.simulator import start_simulator
from ptu_verify.simulator.limiter import (
    Admission,
    Limiter,
    SlidingWindowMeter,
    TokenBucketMeter,
)

COMPAT_PATH = "/compatible-mode/v1/chat/completions"
NATIVE_PATH = "/api/v1/services/aigc/text-generation/generation"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def compat_body(max_tokens: int = 5) -> dict[str, Any]:
    return {"model": "qwen-plus-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}


def native_body(max_tokens: int = 5) -> dict[str, Any]:
    return {"model": "qwen-plus-test", "input": {"messages": [{"role": "user", "content": "hi"}]}, "parameters": {"max_tokens": max_tokens}}


def test_sliding_window_forgets_after_window() -> None:
    meter = SlidingWindowMeter(budget=100, window_s=6.0)

    meter.add(90, now=0.0)
    assert not meter.fits(20, now=1.0)
    assert meter.fits(10, now=1.0)
    assert meter.fits(20, now=6.1)
    assert meter.used(6.1) == 0


def test_sliding_window_refund_only_inside_window() -> None:
    meter = SlidingWindowMeter(budget=100, window_s=6.0)

    slot = meter.add(80, now=0.0)
    meter.refund(50, slot, now=1.0)
    assert meter.used(1.0) == 30
    meter.refund(30, slot, now=7.0)
    assert meter.used(7.0) == 0


def test_oversized_charge_fits_empty_window() -> None:
    meter = SlidingWindowMeter(budget=100, window_s=6.0)

    assert meter.fits(500, now=0.0)
    meter.add(500, now=0.0)
    assert not meter.fits(1, now=3.0)


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucketMeter(budget=600, window_s=60.0, burst_s=5.0, now=0.0)

    assert bucket.size == 50
    bucket.add(50, now=0.0)
    assert not bucket.fits(5, now=0.0)
    assert bucket.fits(5, now=0.5)
    assert bucket.level(100.0) == 50


def test_reserve_admission_is_corrected() -> None:
    clock = FakeClock()
    limiter = Limiter(make_config(admission="reserve_max_tokens", window_s=6.0), clock)

    admission = limiter.admit(100, 1000)
    assert isinstance(admission, Admission)
    assert limiter.token_meters["total"].used(clock.now) == 1100  # type: ignore[union-attr]
    limiter.charge_output(admission, 40)
    limiter.settle(admission)
    assert limiter.token_meters["total"].used(clock.now) == 140  # type: ignore[union-attr]


def test_output_charged_as_generated() -> None:
    clock = FakeClock()
    limiter = Limiter(make_config(window_s=6.0), clock)

    admission = limiter.admit(100, 1000)
    assert isinstance(admission, Admission)
    limiter.charge_output(admission, 40)
    limiter.settle(admission)
    assert limiter.token_meters["total"].used(clock.now) == 140  # type: ignore[union-attr]


def test_limiter_burst_then_request_limit() -> None:
    clock = FakeClock()
    limiter = Limiter(make_config(capacity_factor=0.05, window_s=6.0, burst_rps=2), clock)
    # Budget per window: 200 QPM × 0.05 × 0.1 = 1 request.

    assert isinstance(limiter.admit(10, 10), Admission)
    assert limiter.admit(10, 10) == "request"
    assert limiter.admit(10, 10) == "burst"
    clock.now += 6.5
    assert isinstance(limiter.admit(10, 10), Admission)


def test_limiter_token_limit() -> None:
    clock = FakeClock()
    limiter = Limiter(make_config(capacity_factor=0.05, window_s=6.0, enforce_qpm=False), clock)
    # Budget per window: 200,000 TPM × 0.05 × 0.1 = 1,000 tokens.

    assert isinstance(limiter.admit(900, 10), Admission)
    assert limiter.admit(200, 10) == "token"
    assert isinstance(limiter.admit(100, 10), Admission)
    clock.now += 6.5
    assert isinstance(limiter.admit(5000, 10), Admission)
    assert limiter.admit(1, 10) == "token"


# Token limit: 200,000 TPM × 0.0005 = 100 tokens per minute, spent by the first 100-token response.
TOKEN_LIMIT = {"enforce_qpm": False, "capacity_factor": 0.0005, "natural_length_fixed": 100}
# Request limit: 200 QPM × 0.05 × 6 s / 60 s = 1 request per window.
REQUEST_LIMIT = {"window_s": 6.0, "capacity_factor": 0.05, "natural_length_fixed": 5}
BURST_LIMIT = {"enforce_qpm": False, "burst_rps": 1, "natural_length_fixed": 5}


@pytest.mark.parametrize(
    ("path", "body", "knobs", "code"),
    [
        (COMPAT_PATH, compat_body(100), TOKEN_LIMIT, "insufficient_quota"),
        (NATIVE_PATH, native_body(100), TOKEN_LIMIT, "Throttling.AllocationQuota"),
        (COMPAT_PATH, compat_body(), REQUEST_LIMIT, "limit_requests"),
        (NATIVE_PATH, native_body(), REQUEST_LIMIT, "Throttling.RateQuota"),
        (COMPAT_PATH, compat_body(), BURST_LIMIT, "limit_burst_rate"),
        (NATIVE_PATH, native_body(), BURST_LIMIT, "Throttling.BurstRate"),
    ],
)
def test_429_codes(path: str, body: dict[str, Any], knobs: dict[str, Any], code: str) -> None:
    config = make_config(**knobs)
    with start_simulator(config) as sim:
        first = httpx.post(sim.base_url + path, json=body)
        second = httpx.post(sim.base_url + path, json=body)
        stats = sim.stats()

    assert first.status_code == 200
    assert second.status_code == 429
    payload = second.json()
    found = payload["error"]["code"] if path == COMPAT_PATH else payload["code"]
    assert found == code
    assert payload["request_id"] == second.headers["x-request-id"]
    assert stats["totals"]["throttled_by_code"] == {code: 1}
    assert stats["totals"]["ok"] == 1


async def _paced_load(url: str, rate_rps: float, duration_s: float) -> list[tuple[int, str | None]]:
    results: list[tuple[int, str | None]] = []

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.post(url, json=compat_body(20)) as response:
            payload = await response.json()
            results.append((response.status, payload.get("error", {}).get("code") if response.status != 200 else None))

    async with aiohttp.ClientSession() as session:
        tasks = []
        start = time.perf_counter()
        count = int(rate_rps * duration_s)
        for index in range(count):
            delay = start + index / rate_rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
    return results


def test_load_at_150_percent_throttled() -> None:
    # Each request costs 8 input + 20 output = 28 tokens. The budget per 1 s window is
    # 200,000 TPM × 0.252 / 60 = 840 tokens = 30 requests/s; the load offers 45 requests/s.
    config = make_config(capacity_factor=0.252, window_s=1.0, enforce_qpm=False, natural_length_fixed=20)
    with start_simulator(config) as sim:
        results = asyncio.run(_paced_load(sim.base_url + COMPAT_PATH, rate_rps=45.0, duration_s=4.0))
        stats = sim.stats()

    statuses = [status for status, _code in results]
    throttled = statuses.count(429)
    assert len(results) == 180
    assert set(statuses) <= {200, 429}
    assert 0.22 <= throttled / len(results) <= 0.45
    assert {code for status, code in results if status == 429} == {"insufficient_quota"}
    totals = stats["totals"]
    assert totals["throttled"] == throttled
    assert totals["ok"] == statuses.count(200)
    assert totals["output_tokens"] == 20 * statuses.count(200)
    assert sum(row["throttled"] for row in stats["series"]) == throttled


def test_token_bucket_throttles_after_burst() -> None:
    # Bucket: 200,000 TPM × 0.0003 = 60 tokens/min = 1 token/s, holding 100 s = 100 tokens.
    config = make_config(limiter="token_bucket", burst_s=100.0, capacity_factor=0.0003, enforce_qpm=False, natural_length_fixed=40)
    with start_simulator(config) as sim, httpx.Client(base_url=sim.base_url) as http:
        statuses = [http.post(COMPAT_PATH, json=compat_body(40)).status_code for _ in range(4)]
        state = sim.stats()["limiter_state"]

    # Each request costs 8 + 40 tokens: two fit the full bucket, the third finds it empty.
    assert statuses[:2] == [200, 200]
    assert statuses[2:] == [429, 429]
    assert state["total_size"] == pytest.approx(100.0)


def test_reserve_admission_throttles_on_max_tokens() -> None:
    # Budget: 200,000 TPM × 0.005 = 1,000 tokens per window; the reservation is 8 + 600 tokens.
    config = make_config(admission="reserve_max_tokens", capacity_factor=0.005, enforce_qpm=False, natural_length_fixed=10)
    with start_simulator(config) as sim, httpx.Client(base_url=sim.base_url) as http:
        reserved = [http.post(COMPAT_PATH, json=compat_body(600)).status_code for _ in range(3)]
        small = http.post(COMPAT_PATH, json=compat_body(10)).status_code

    # After each request ends its reservation shrinks to 8 + 10 tokens, so later ones fit again.
    assert reserved == [200, 200, 200]
    assert small == 200


def test_reserve_admission_blocks_concurrent_reservations() -> None:
    clock = FakeClock()
    limiter = Limiter(make_config(admission="reserve_max_tokens", capacity_factor=0.005, window_s=60.0, enforce_qpm=False), clock)

    first = limiter.admit(8, 600)
    second = limiter.admit(8, 600)

    assert isinstance(first, Admission)
    assert second == "token"


def test_reset_ignores_older_admissions() -> None:
    clock = FakeClock()
    config = make_config(admission="reserve_max_tokens", window_s=6.0)
    old = Limiter(config, clock)
    admission = old.admit(100, 1000)
    assert isinstance(admission, Admission)
    new = Limiter(config, clock)
    new.admit(50, 10)

    new.charge_output(admission, 40)
    new.settle(admission)

    assert new.token_meters["total"].used(clock.now) == 60  # type: ignore[union-attr]
