"""PTU recommendation for a target demand, sized with the observed token mix of the run."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ..catalog import ModelSpec
from ..sizing import Demand, Prices, estimate_cost, size_ptus

__all__ = ["Action", "recommend"]

Action = Literal["scale_up", "scale_down", "keep"]


def _no_target() -> dict[str, Any]:
    return {"action": None, "ptu_recommended": None, "ptu_delta": None, "target_source": None}


def recommend(
    spec: ModelSpec,
    deployed_ptu: int,
    *,
    target_tpm: float | None,
    target_qpm: float | None,
    headroom: float,
    prices: Prices,
    tokens_per_request: float | None,
    input_share: float | None,
    observed_offered_tpm: float | None,
    observed_offered_qpm: float | None,
    trace_plan: bool,
) -> dict[str, Any]:
    """Size PTUs for the target (or, for a trace replay, the observed offered demand).

    A TPM target without a QPM target also implies a QPM (TPM ÷ observed tokens per request) and
    the reverse, so the binding limit is found the way the deployment will meet the traffic.
    """
    source = "options"
    if target_tpm is None and target_qpm is None:
        if not trace_plan or observed_offered_tpm is None:
            return _no_target()
        source = "trace"
        target_tpm, target_qpm = observed_offered_tpm, observed_offered_qpm

    if target_tpm is None:
        assert target_qpm is not None
        target_tpm = target_qpm * tokens_per_request if tokens_per_request else 0.0
    if target_qpm is None and tokens_per_request:
        target_qpm = target_tpm / tokens_per_request
    share = input_share if input_share is not None else 0.5
    demand = Demand(input_tpm=target_tpm * share, output_tpm=target_tpm * (1.0 - share), qpm=target_qpm)
    sizing = size_ptus(spec, demand, headroom=headroom)

    current = spec.capacity(deployed_ptu)
    current_utilization = [target_tpm / current.total_tpm] if current.total_tpm else []
    if target_qpm is not None and current.qpm:
        current_utilization.append(target_qpm / current.qpm)
    delta = sizing.ptu - deployed_ptu
    action: Action = "keep"
    if delta > 0:
        action = "scale_up"
    elif delta < 0:
        action = "scale_down"

    cost_before = cost_after = None
    if prices.any_given:
        deployed_sizing = dataclasses.replace(sizing, ptu=deployed_ptu, capacity_tpm=current.total_tpm, capacity_qpm=current.qpm)
        cost_before = estimate_cost(deployed_sizing, prices).as_dict()
        cost_after = estimate_cost(sizing, prices).as_dict()
    return {
        "action": action,
        "ptu_recommended": sizing.ptu,
        "ptu_delta": delta,
        "ptu_deployed": deployed_ptu,
        "target_source": source,
        "target_tpm": target_tpm,
        "target_qpm": target_qpm,
        "headroom": headroom,
        "binding_limit": sizing.binding_limit,
        "utilization_at_target_deployed": max(current_utilization) if current_utilization else None,
        "utilization_at_target_recommended": sizing.utilization,
        "sizing": sizing.as_dict(),
        "cost_before": cost_before,
        "cost_after": cost_after,
    }
