"""Preflight: one streamed request through the chosen API and transport before any load.

A wrong key, an unknown deployment code or an unreachable host would otherwise turn a whole run into
thousands of identical failures. The preflight request is not written to records.jsonl; its outcome
goes to run.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ptu_verify.i18n import _
from ptu_verify.records import RequestRecord
from ptu_verify.requests import RequestSpec

from .client import ClientConfig, StreamClient
from .options import LoadOptions

__all__ = ["PreflightResult", "check_api_key", "run_preflight"]

logger = logging.getLogger(__name__)

PREFLIGHT_MAX_TOKENS = 8


@dataclass(frozen=True)
class PreflightResult:
    """The outcome of the preflight request; ``problem`` is None when the load may start."""

    problem: str | None
    record: RequestRecord | None

    def as_dict(self) -> dict[str, Any]:
        """Return the fields run.json keeps (no prompt, no key)."""
        record: dict[str, Any] = dict(self.record) if self.record else {}
        return {
            "ok": self.problem is None,
            "problem": self.problem,
            "outcome": record.get("outcome"),
            "status_code": record.get("status_code"),
            "error_code": record.get("error_code"),
            "request_id": record.get("request_id"),
            "ttft_s": record.get("ttft_s"),
            "e2e_s": record.get("e2e_s"),
        }


def check_api_key(options: LoadOptions) -> str | None:
    """Return a problem description when the API key variable is not set, else None."""
    if options.api_key():
        return None
    return _("The environment variable {variable} is not set. Export the API key in it, or name another variable with --api-key-env.").format(variable=options.api_key_env)


def explain(record: RequestRecord, options: LoadOptions) -> str | None:
    """Return why the preflight record forbids starting the load, or None when it allows it."""
    outcome = record["outcome"]
    status = record["status_code"]
    detail = " ".join(str(part) for part in (f"HTTP {status}" if status else None, record["error_code"], record["error_message"]) if part)
    if outcome == "ok":
        return None
    if outcome == "throttled":
        logger.warning("The preflight request was throttled (%s); the deployment exists, the load starts anyway", detail)
        return None
    if status in (401, 403):
        return _("The API key in {variable} was rejected ({detail}). Check the key and that it belongs to the workspace of deployment {code}.").format(
            variable=options.api_key_env, detail=detail, code=options.deployment_code
        )
    if status == 404:
        return _("Deployment code '{code}' was not found at {host} ({detail}). Copy the deployment code from the Bailian console and check --host and --api ({api}).").format(
            code=options.deployment_code, host=options.host, detail=detail, api=options.api
        )
    if outcome in ("connection_error", "timeout"):
        return _("Cannot reach {host} ({outcome}: {detail}). Check --host, the network and any proxy settings.").format(
            host=options.host, outcome=outcome, detail=detail or _("no response")
        )
    return _("The preflight request to {host} failed: {outcome} ({detail}). Fix the cause, or pass --skip-preflight to start anyway.").format(
        host=options.host, outcome=outcome, detail=detail or _("no detail")
    )


def run_preflight(options: LoadOptions, api_key: str | None, *, run_id: str = "", worker_id: str = "preflight") -> PreflightResult:
    """Send one short streamed request and judge whether the load may start."""
    client = StreamClient(
        ClientConfig(
            api=options.api,  # type: ignore[arg-type]
            transport=options.transport,  # type: ignore[arg-type]
            base_url=options.host,
            deployment_code=options.deployment_code,
            api_key=api_key,
            request_timeout_s=min(options.request_timeout_s, 60.0),
            thinking=True if options.thinking else None,
            run_id=run_id,
            worker_id=worker_id,
        )
    )
    spec = RequestSpec(
        messages=[{"role": "user", "content": "Reply with one word: ready."}],
        max_tokens=PREFLIGHT_MAX_TOKENS,
        workload="preflight",
        variant="preflight",
    )
    try:
        record = client.send(spec, stage="preflight")[-1]
    finally:
        client.close()
    problem = explain(record, options)
    if problem is None:
        logger.info("Preflight passed: %s in %.2f s (request id %s)", record["outcome"], record["e2e_s"] or 0.0, record["request_id"])
    return PreflightResult(problem=problem, record=record)
