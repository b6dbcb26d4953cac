"""PTU admission control: token and request budgets per window, or token buckets.

Budgets per window are the catalog figure × capacity_factor × window_s / 60. A request is
throttled when its admission charge does not fit. With admission ``input_then_output`` the charge
is its input tokens, and output is charged as it is generated. With ``reserve_max_tokens`` it is
input + max_tokens, corrected to the real output when the request ends.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .config import SimulatorConfig

__all__ = ["Admission", "Limiter", "SlidingWindowMeter", "ThrottleKind", "TokenBucketMeter"]

ThrottleKind = Literal["token", "request", "burst"]
_SLOTS = 60


class SlidingWindowMeter:
    """Usage over the last ``window_s`` seconds, kept in 60 slots of window_s/60 each.

    The window is slot-granular: it covers the current slot and the 59 before it.
    """

    def __init__(self, budget: float, window_s: float) -> None:
        self.budget = budget
        self.slot_s = window_s / _SLOTS
        self._ring = [0.0] * _SLOTS
        self._head = 0  # absolute index of the newest slot
        self._used = 0.0

    def _advance(self, now: float) -> int:
        current = int(now / self.slot_s)
        if current - self._head >= _SLOTS:
            self._ring = [0.0] * _SLOTS
            self._used = 0.0
        else:
            while self._head < current:
                self._head += 1
                slot = self._head % _SLOTS
                self._used -= self._ring[slot]
                self._ring[slot] = 0.0
        self._head = max(self._head, current)
        return current

    def used(self, now: float) -> float:
        """Return the usage inside the window ending at ``now``."""
        self._advance(now)
        return max(self._used, 0.0)

    def fits(self, charge: float, now: float) -> bool:
        """Return True when ``charge`` fits the budget (a charge above the budget fits an empty window)."""
        used = self.used(now)
        if charge <= 0:
            return used < self.budget
        return used + min(charge, self.budget) <= self.budget

    def add(self, amount: float, now: float) -> int:
        """Add ``amount`` at ``now`` and return the slot it went to."""
        current = self._advance(now)
        self._ring[current % _SLOTS] += amount
        self._used += amount
        return current

    def refund(self, amount: float, slot: int, now: float) -> None:
        """Take ``amount`` back from ``slot`` if that slot is still inside the window."""
        current = self._advance(now)
        if current - slot >= _SLOTS or amount <= 0:
            return
        index = slot % _SLOTS
        taken = min(amount, self._ring[index])
        self._ring[index] -= taken
        self._used -= taken


class TokenBucketMeter:
    """A bucket refilled at budget/window_s per second, holding at most burst_s seconds of refill.

    The level may go negative when output is charged as it is generated; admission then waits
    until it refills.
    """

    def __init__(self, budget: float, window_s: float, burst_s: float, now: float) -> None:
        self.rate_per_s = budget / window_s
        self.size = self.rate_per_s * burst_s
        self._level = self.size
        self._at = now

    def level(self, now: float) -> float:
        """Return the bucket level at ``now``."""
        if now > self._at:
            self._level = min(self.size, self._level + (now - self._at) * self.rate_per_s)
            self._at = now
        return self._level

    def fits(self, charge: float, now: float) -> bool:
        """Return True when ``charge`` fits (a charge above the bucket size fits a full bucket)."""
        level = self.level(now)
        if charge <= 0:
            return level > 0
        return level >= min(charge, self.size)

    def add(self, amount: float, now: float) -> int:
        """Take ``amount`` out of the bucket."""
        self._level = self.level(now) - amount
        return 0

    def refund(self, amount: float, slot: int, now: float) -> None:
        """Put ``amount`` back (up to the bucket size)."""
        if amount > 0:
            self._level = min(self.size, self.level(now) + amount)


Meter = SlidingWindowMeter | TokenBucketMeter


@dataclass
class Admission:
    """The charges of an admitted request, kept so that output and corrections reach the right meters."""

    input_tokens: int
    reserved_output: int
    limiter_id: int  # the Limiter that admitted it; a reset replaces the limiter
    slots: dict[str, int] = field(default_factory=dict)
    charged_output: int = 0


class Limiter:
    """Token, request and burst limits of one deployment. Not thread-safe: use it from one event loop."""

    _ids = itertools.count(1)

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter_id = next(Limiter._ids)
        self.clock = clock
        self.reserve = config.admission == "reserve_max_tokens"
        self.burst_rps = config.burst_rps
        scale = config.capacity_factor * config.window_s / 60.0
        now = clock()
        capacity = config.capacity

        def meter(per_minute: float) -> Meter:
            budget = per_minute * scale
            if config.limiter == "token_bucket":
                return TokenBucketMeter(budget, config.window_s, config.burst_s, now)
            return SlidingWindowMeter(budget, config.window_s)

        self.token_meters: dict[str, Meter] = {}
        if capacity.tpm is not None:
            self.token_meters["total"] = meter(capacity.tpm)
        if capacity.input_tpm is not None:
            self.token_meters["input"] = meter(capacity.input_tpm)
        if capacity.output_tpm is not None:
            self.token_meters["output"] = meter(capacity.output_tpm)
        self.request_meter: Meter | None = meter(capacity.qpm) if config.enforce_qpm else None
        self._arrivals: collections.deque[float] = collections.deque()

    def _charges(self, input_tokens: int, reserved_output: int) -> dict[str, int]:
        charges = {"total": input_tokens + reserved_output, "input": input_tokens, "output": reserved_output}
        return {name: charges[name] for name in self.token_meters}

    def admit(self, input_tokens: int, max_output_tokens: int) -> Admission | ThrottleKind:
        """Admit a request and charge it, or return which limit throttled it."""
        now = self.clock()

        if self.burst_rps is not None:
            # Burst protection counts every arrival, throttled or not.
            while self._arrivals and self._arrivals[0] <= now - 1.0:
                self._arrivals.popleft()
            self._arrivals.append(now)
            if len(self._arrivals) > self.burst_rps:
                return "burst"
        if self.request_meter is not None and not self.request_meter.fits(1, now):
            return "request"

        reserved = max_output_tokens if self.reserve else 0
        charges = self._charges(input_tokens, reserved)
        for name, charge in charges.items():
            if not self.token_meters[name].fits(charge, now):
                return "token"

        if self.request_meter is not None:
            self.request_meter.add(1, now)
        admission = Admission(input_tokens=input_tokens, reserved_output=reserved, limiter_id=self.limiter_id)
        for name, charge in charges.items():
            admission.slots[name] = self.token_meters[name].add(charge, now)
        return admission

    def charge_output(self, admission: Admission, tokens: int) -> None:
        """Charge output tokens as they are generated (admission input_then_output only)."""
        admission.charged_output += tokens
        if self.reserve or tokens <= 0 or admission.limiter_id != self.limiter_id:
            return
        now = self.clock()
        for name in ("total", "output"):
            if name in self.token_meters:
                self.token_meters[name].add(tokens, now)

    def settle(self, admission: Admission) -> None:
        """Correct a reservation to the output really generated (admission reserve_max_tokens only)."""
        if not self.reserve or admission.limiter_id != self.limiter_id:
            return
        unused = admission.reserved_output - admission.charged_output
        now = self.clock()
        for name in ("total", "output"):
            if name in self.token_meters:
                self.token_meters[name].refund(unused, admission.slots[name], now)

    def snapshot(self) -> dict[str, float]:
        """Return the current usage (sliding window) or level (token bucket) of every meter."""
        now = self.clock()
        result: dict[str, float] = {}
        meters: dict[str, Meter] = dict(self.token_meters)
        if self.request_meter is not None:
            meters["requests"] = self.request_meter
        for name, meter in meters.items():
            if isinstance(meter, SlidingWindowMeter):
                result[f"{name}_used"] = meter.used(now)
                result[f"{name}_budget"] = meter.budget
            else:
                result[f"{name}_level"] = meter.level(now)
                result[f"{name}_size"] = meter.size
        return result
