"""Public API of the measurement core: send one RequestSpec, get one RequestRecord per attempt.

    config = ClientConfig(api="openai", transport="fast", base_url=HOST, deployment_code="qwen-plus-test")
    client = StreamClient(config)
    records = client.send(spec, stage="s1")
    client.close()

``base_url`` is the API base: ``…/compatible-mode/v1`` for ``api="openai"``, ``…/api/v1`` for
``api="dashscope"``. The client never retries on its own; with ``retry_429=True`` it retries throttled
attempts and returns every attempt as its own record. It runs in gevent greenlets (Locust) and in a
plain process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from loadtest.measure import (
    AttemptContext,
    AttemptMeasurement,
    EndMarker,
    install_log_scrubber,
)
from loadtest.protocol import build_request, make_interpreter
from loadtest.transports import FastTransport, Transport
from ptu_verify.errors import InputError
from ptu_verify.records import RequestRecord
from ptu_verify.requests import RequestSpec

__all__ = ["ClientConfig", "StreamClient"]

logger = logging.getLogger(__name__)


@dataclass
class ClientConfig:
    """How to reach a deployment and how to time it. ``api_key`` is never written to a record or log."""

    api: Literal["openai", "dashscope"]
    transport: Literal["fast", "sdk"]
    base_url: str  # …/compatible-mode/v1 (openai) or …/api/v1 (dashscope)
    deployment_code: str
    api_key: str | None = None
    request_timeout_s: float = 120.0  # whole attempt: connect, headers and the full stream
    thinking: bool | None = None  # overrides RequestSpec.thinking when set
    run_id: str = ""
    worker_id: str = ""
    retry_429: bool = False
    max_attempts: int = 3  # with retry_429: attempts per request, the first one included
    incremental_output: bool = True  # native API only; False makes the server send cumulative text
    connection_pool_size: int = 100  # connections per client; keep it >= concurrent users per process
    retry_backoff_s: float = 1.0  # first wait without a server hint; doubles per retry
    retry_max_wait_s: float = 60.0  # cap on any wait between attempts, hinted or not

    def __post_init__(self) -> None:
        if self.api not in ("openai", "dashscope"):
            raise InputError(f"ClientConfig.api: invalid value {self.api!r}; use 'openai' or 'dashscope'")
        if self.transport not in ("fast", "sdk"):
            raise InputError(f"ClientConfig.transport: invalid value {self.transport!r}; use 'fast' or 'sdk'")
        if not self.base_url.startswith(("http://", "https://")):
            raise InputError(
                f"ClientConfig.base_url: invalid value {self.base_url!r}; "
                "give the API base URL, e.g. https://dashscope.aliyuncs.com/compatible-mode/v1"
            )
        if not self.deployment_code:
            raise InputError("ClientConfig.deployment_code is empty; give the deployment code used as the model name")
        if self.request_timeout_s <= 0:
            raise InputError(f"ClientConfig.request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.max_attempts < 1:
            raise InputError(f"ClientConfig.max_attempts must be >= 1, got {self.max_attempts}")

    @property
    def end_marker(self) -> EndMarker:
        """What a complete stream ends with: [DONE] when we parse compat streams ourselves, else a finish_reason.

        The openai SDK swallows [DONE], so the sdk transport can only check the finish_reason.
        """
        if self.api == "openai" and self.transport == "fast":
            return "done"
        return "finish_reason"


def _make_transport(config: ClientConfig) -> Transport:
    if config.transport == "fast":
        return FastTransport(config.base_url, pool_size=config.connection_pool_size, request_timeout_s=config.request_timeout_s)

    from loadtest.sdk_transports import DashScopeSDKTransport, OpenAISDKTransport

    if config.api == "openai":
        return OpenAISDKTransport(config)
    return DashScopeSDKTransport(config)


class StreamClient:
    """Sends streaming chat requests to one deployment and measures each attempt."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        install_log_scrubber(config.api_key)
        self._transport = _make_transport(config)

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()

    def send(self, spec: RequestSpec, stage: str = "s1", scheduled_at: float | None = None) -> list[RequestRecord]:
        """Send ``spec`` and return one record per attempt (one unless retry_429 retried throttling)."""
        config = self.config
        thinking = config.thinking if config.thinking is not None else spec.thinking
        prepared = build_request(
            config.api,
            base_url=config.base_url,
            deployment_code=config.deployment_code,
            messages=spec.messages,
            max_tokens=spec.max_tokens,
            api_key=config.api_key,
            thinking=thinking,
            incremental_output=config.incremental_output,
            extra_params=spec.extra_params,
        )
        attempts = config.max_attempts if config.retry_429 else 1
        records: list[RequestRecord] = []
        first_send_perf: float | None = None

        for attempt in range(1, attempts + 1):
            context = AttemptContext(
                run_id=config.run_id,
                worker_id=config.worker_id,
                api=config.api,
                transport=config.transport,
                deployment_code=config.deployment_code,
                workload=spec.workload,
                variant=spec.variant,
                stage=stage,
                max_tokens=spec.max_tokens,
                messages=spec.messages,
                thinking=thinking,
                scheduled_at=scheduled_at,
                attempt=attempt,
                api_key=config.api_key,
                end_marker=config.end_marker,
            )
            measurement = AttemptMeasurement(context, first_send_perf=first_send_perf)
            interpreter = make_interpreter(config.api, incremental_output=prepared.body.get("parameters", {}).get("incremental_output", True))
            try:
                self._transport.execute(prepared, measurement, interpreter, config.request_timeout_s)
            except Exception as exc:
                logger.exception("request attempt failed inside the client (%s); recorded as client_error", type(exc).__name__)
                measurement.fail("client_error", type(exc).__name__, str(exc))
            record = measurement.build_record()
            records.append(record)
            first_send_perf = measurement.first_send_perf

            if record["outcome"] != "throttled" or attempt == attempts:
                break
            wait_s = self._retry_wait_s(record["retry_after_s"], attempt)
            logger.debug("attempt %d throttled (%s); retrying in %.2f s", attempt, record["error_code"], wait_s)
            time.sleep(wait_s)
        return records

    def _retry_wait_s(self, retry_after_s: float | None, attempt: int) -> float:
        """Return the wait before the next attempt: the server's hint, else exponential backoff."""
        if retry_after_s is not None:
            return min(retry_after_s, self.config.retry_max_wait_s)
        return min(self.config.retry_backoff_s * 2 ** (attempt - 1), self.config.retry_max_wait_s)
