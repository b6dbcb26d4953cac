"""The aiohttp application: shared state, routes, request checks, admission and the latency model."""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .config import SimulatorConfig
from .generation import (
    Plan,
    json_response,
    sse_headers,
    stream_response,
    whole_response,
)
from .limiter import Admission, Limiter
from .parse import ChatRequest, PrefixCache, RequestRejected, parse_request
from .protocol import (
    ERRORS,
    error_body,
    sse_error_frame,
)
from .stats import RequestEntry, Stats
from .textgen import TokenPool, build_pool

__all__ = ["SimulatorState", "build_app", "shared_pool"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def shared_pool() -> TokenPool:
    """Return the output token pool, built once per process."""
    return build_pool(0)


class SimulatorState:
    """Everything the handlers share: configuration, limiter, statistics, RNG and caches."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.limiter = Limiter(config, clock)
        self.stats = Stats()
        self.rng = random.Random(config.seed)
        self.pool = shared_pool()
        self.prefix_cache = PrefixCache(config.cache_min_tokens)
        self.active_requests = 0  # admitted and not yet finished, streaming or not
        self.started_mono = clock()

    def reset(self) -> None:
        """Forget statistics, limiter usage and cached prefixes."""
        self.limiter = Limiter(self.config, self.clock)
        self.stats.reset()
        self.prefix_cache = PrefixCache(self.config.cache_min_tokens)
        self.started_mono = self.clock()

    def stats_json(self, include_requests: bool = True) -> dict[str, Any]:
        """Return the /sim/stats document; without ``include_requests`` the per-request list is left out."""
        capacity = self.config.capacity
        extra = {
            "model": self.config.model_version,
            "deployment_code": self.config.deployment_code,
            "ptu": self.config.ptu,
            "capacity": {
                "tpm": capacity.tpm,
                "input_tpm": capacity.input_tpm,
                "output_tpm": capacity.output_tpm,
                "qpm": capacity.qpm,
                "capacity_factor": self.config.capacity_factor,
                "window_s": self.config.window_s,
                "limiter": self.config.limiter,
                "admission": self.config.admission,
            },
            "config": self.config.public_dict(),
            "limiter_state": self.limiter.snapshot(),
            "active_requests": self.active_requests,
        }
        return self.stats.as_json(extra, include_requests)

    def pick_faults(self) -> set[str]:
        """Draw the faults that apply to a request arriving now."""
        faults = {name for name, probability in self.config.faults.items() if probability > 0 and self.rng.random() < probability}
        if self.config.fault_schedule:
            elapsed = self.clock() - self.started_mono
            for window in self.config.fault_schedule:
                if window.start_s <= elapsed < window.end_s and self.rng.random() < window.probability:
                    faults.add(window.fault)
        return faults

    def plan(self, request: ChatRequest, cached_tokens: int, faults: set[str]) -> Plan:
        """Draw output length, TTFT and speed for an admitted request."""
        config = self.config
        if config.natural_length_fixed is not None:
            natural = config.natural_length_fixed
        else:
            natural = max(1, round(config.natural_length_median * math.exp(self.rng.gauss(0.0, config.natural_length_sigma))))
        limit = request.max_tokens if request.max_tokens is not None else config.max_output_tokens
        output_tokens = min(natural, limit)
        finish_reason = "length" if natural > limit else "stop"
        reasoning_tokens = int(output_tokens * config.reasoning_share) if request.thinking else 0

        latency = config.latency
        knee = config.effective_knee
        overload = max(0.0, self.active_requests / knee - 1.0)
        queueing_s = latency.ttft_base_s * overload
        ttft_s = (latency.ttft_base_s + latency.prefill_s_per_token * (request.input_tokens - cached_tokens) + queueing_s) * config.ttft_factor
        jitter = math.exp(self.rng.gauss(0.0, latency.speed_jitter)) if latency.speed_jitter > 0 else 1.0
        speed_tps = latency.speed_tps * config.speed_factor * jitter / (1.0 + overload)

        return Plan(
            output_tokens=output_tokens,
            reasoning_tokens=reasoning_tokens,
            finish_reason=finish_reason,
            ttft_s=ttft_s,
            speed_tps=speed_tps,
            tokens_per_chunk=config.multi_token_count if "multi_token" in faults else config.tokens_per_chunk,
            reasoning_offset=self.pool.start_offset(self.rng),
            content_offset=self.pool.start_offset(self.rng),
            faults=faults,
        )


async def _error_response(
    http_request: web.Request,
    state: SimulatorState,
    entry: RequestEntry,
    api: str,
    kind: str,
    message: str | None = None,
) -> web.StreamResponse:
    """Return an error in the API's shape. Streams get an event:error frame when error_style is sse_event."""
    spec = ERRORS[kind]
    request_id = entry["request_id"]
    entry["status"] = spec.status
    entry["error_code"] = spec.native_code if api == "dashscope" else spec.compat_code
    entry["outcome"] = "throttled" if spec.status == 429 else "http_error"
    entry["finished_at"] = time.time()
    if spec.status == 429:
        state.stats.record_throttle()
    logger.debug("Request %s rejected with %d %s", request_id, spec.status, entry["error_code"])

    if entry["stream"] and state.config.error_style == "sse_event":
        response = web.StreamResponse(status=200, headers=sse_headers(api, request_id))
        try:
            await response.prepare(http_request)
            await response.write(sse_error_frame(api, kind, request_id, 1, message, state.config.compat_stream_error).encode())
            entry["finished_at"] = time.time()
            await response.write_eof()
        except ConnectionError:
            logger.debug("Client left before the error frame of request %s was written", request_id)
        return response
    return json_response(error_body(api, kind, request_id, message), spec.status, request_id)


def _check_auth(http_request: web.Request, config: SimulatorConfig) -> bool:
    if config.api_key is None:
        return True
    header = http_request.headers.get("Authorization", "")
    return header == f"Bearer {config.api_key}"


async def _handle_chat(http_request: web.Request, api: str, multimodal_endpoint: bool) -> web.StreamResponse:
    state = http_request.app[STATE_KEY]
    config = state.config
    request_id = str(uuid.uuid4())
    native_stream = http_request.headers.get("X-DashScope-SSE", "").lower() == "enable"
    entry = state.stats.new_entry(request_id, api, native_stream)

    try:
        raw = await http_request.read()
    except web.HTTPRequestEntityTooLarge:
        return await _error_response(
            http_request, state, entry, api, "too_large", f"Request body is larger than {config.max_body_bytes} bytes."
        )
    except ConnectionError:
        # The client disconnected before its body arrived, so no response can be sent.
        entry["outcome"] = "client_disconnect"
        entry["finished_at"] = time.time()
        logger.debug("Client disconnected while sending the body of request %s", request_id)
        return web.Response(status=400)
    if not _check_auth(http_request, config):
        message = "Incorrect API key provided." if api == "openai" else None
        return await _error_response(http_request, state, entry, api, "auth", message)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested thousands deep
        return await _error_response(http_request, state, entry, api, "bad_request", "The request body is not valid JSON.")
    if api == "openai" and isinstance(body, dict):
        entry["stream"] = bool(body.get("stream", False))

    try:
        request = parse_request(api, body, native_stream=native_stream, multimodal_endpoint=multimodal_endpoint, config=config)
    except RequestRejected as rejection:
        return await _error_response(http_request, state, entry, api, rejection.kind, rejection.message)
    entry["input_tokens"] = request.input_tokens
    entry["image_tokens"] = request.image_tokens if request.images else None
    entry["max_tokens"] = request.max_tokens

    faults = state.pick_faults()
    entry["faults"] = sorted(faults)
    if "http_500" in faults:
        return await _error_response(http_request, state, entry, api, "internal")
    if "http_503" in faults:
        return await _error_response(http_request, state, entry, api, "unavailable")

    max_output = request.max_tokens if request.max_tokens is not None else config.max_output_tokens
    admission = state.limiter.admit(request.input_tokens, max_output)
    if not isinstance(admission, Admission):
        return await _error_response(http_request, state, entry, api, admission)
    state.stats.record_admitted(request.input_tokens)

    cached_tokens = state.prefix_cache.lookup_and_store(request) if config.prompt_cache else 0
    entry["cached_tokens"] = cached_tokens
    plan = state.plan(request, cached_tokens, faults)
    state.active_requests += 1
    try:
        if request.stream:
            return await stream_response(http_request, state, entry, api, request, plan, admission, cached_tokens)
        return await whole_response(state, entry, api, request, plan, admission, cached_tokens)
    finally:
        state.active_requests -= 1
        state.limiter.settle(admission)


async def _health(http_request: web.Request) -> web.Response:
    state = http_request.app[STATE_KEY]
    return web.json_response({"status": "ok", "model": state.config.model_version, "deployment_code": state.config.deployment_code})


async def _stats(http_request: web.Request) -> web.Response:
    state = http_request.app[STATE_KEY]
    include_requests = http_request.query.get("requests", "1").lower() not in ("0", "false", "no")
    return web.json_response(state.stats_json(include_requests))


async def _reset(http_request: web.Request) -> web.Response:
    state = http_request.app[STATE_KEY]
    state.reset()
    logger.info("Simulator statistics and limiter reset")
    return web.json_response({"status": "reset"})


async def _models(http_request: web.Request) -> web.Response:
    state = http_request.app[STATE_KEY]
    created = int(state.stats.started_at)
    data = [{"id": name, "object": "model", "created": created, "owned_by": "system"} for name in state.config.model_names()]
    return web.json_response({"object": "list", "data": data})


STATE_KEY = web.AppKey("ptu_verify_simulator_state", SimulatorState)


def build_app(state: SimulatorState) -> web.Application:
    """Return the aiohttp application serving both APIs and the /sim endpoints."""
    app = web.Application(client_max_size=state.config.max_body_bytes)
    app[STATE_KEY] = state

    async def compat(http_request: web.Request) -> web.StreamResponse:
        return await _handle_chat(http_request, "openai", False)

    async def native_text(http_request: web.Request) -> web.StreamResponse:
        return await _handle_chat(http_request, "dashscope", False)

    async def native_multimodal(http_request: web.Request) -> web.StreamResponse:
        return await _handle_chat(http_request, "dashscope", True)

    app.router.add_post("/compatible-mode/v1/chat/completions", compat)
    app.router.add_post("/v1/chat/completions", compat)
    app.router.add_get("/compatible-mode/v1/models", _models)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/api/v1/services/aigc/text-generation/generation", native_text)
    app.router.add_post("/api/v1/services/aigc/multimodal-generation/generation", native_multimodal)
    app.router.add_get("/health", _health)
    app.router.add_get("/sim/stats", _stats)
    app.router.add_post("/sim/reset", _reset)
    return app
