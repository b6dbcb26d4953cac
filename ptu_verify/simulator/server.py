"""The aiohttp application: routes, admission, the latency model and response streaming."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import random
import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .config import SimulatorConfig
from .limiter import Admission, Limiter
from .parse import ChatRequest, PrefixCache, RequestRejected, parse_request
from .protocol import (
    ERRORS,
    CompatFrames,
    NativeFrames,
    Usage,
    error_body,
    sse_error_frame,
)
from .stats import RequestEntry, Stats
from .textgen import TokenPool, build_pool

__all__ = ["SimulatorState", "build_app", "shared_pool"]

logger = logging.getLogger(__name__)

_SSE_HEADERS_NATIVE = {"Content-Type": "text/event-stream;charset=UTF-8", "Cache-Control": "no-cache"}
_SSE_HEADERS_COMPAT = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
# A chunk due sooner than this is written with the current batch instead of sleeping for it.
_MIN_SLEEP_S = 0.002
_MID_STREAM_FAULTS = frozenset({"stream_error", "reset", "truncate", "stall", "malformed"})
# Non-streaming responses charge generated output in steps of this length.
_NON_STREAM_STEP_S = 0.5


@functools.lru_cache(maxsize=1)
def shared_pool() -> TokenPool:
    """Return the output token pool, built once per process."""
    return build_pool(0)


@dataclass
class Plan:
    """Generation plan of one admitted request: length, timing, text offsets and faults."""

    output_tokens: int
    reasoning_tokens: int
    finish_reason: str
    ttft_s: float
    speed_tps: float
    tokens_per_chunk: int
    reasoning_offset: int
    content_offset: int
    faults: set[str]


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
        self.active_streams = 0
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
            "limiter_state": self.limiter.snapshot(),
            "active_streams": self.active_streams,
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
        overload = max(0.0, self.active_streams / knee - 1.0)
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


def _json_response(body: dict[str, Any], status: int, request_id: str) -> web.Response:
    return web.Response(
        body=json.dumps(body, ensure_ascii=False).encode(),
        status=status,
        content_type="application/json",
        headers={"x-request-id": request_id},
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
        headers = dict(_SSE_HEADERS_NATIVE if api == "dashscope" else _SSE_HEADERS_COMPAT)
        headers["x-request-id"] = request_id
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(http_request)
        await response.write(sse_error_frame(api, kind, request_id, 1, message, state.config.compat_stream_error).encode())
        entry["finished_at"] = time.time()
        await response.write_eof()
        return response
    return _json_response(error_body(api, kind, request_id, message), spec.status, request_id)


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
        # The client went away before its body arrived; nothing can be answered.
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
    state.active_streams += 1
    try:
        if request.stream:
            return await _stream(http_request, state, entry, api, request, plan, admission, cached_tokens)
        return await _respond_whole(state, entry, api, request, plan, admission, cached_tokens)
    finally:
        state.active_streams -= 1
        state.limiter.settle(admission)


def _usage(request: ChatRequest, plan: Plan, cached_tokens: int, output_tokens: int, reasoning_tokens: int) -> Usage:
    return Usage(
        input_tokens=request.input_tokens,
        cached_tokens=cached_tokens,
        image_tokens=request.image_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
    )


async def _respond_whole(
    state: SimulatorState,
    entry: RequestEntry,
    api: str,
    request: ChatRequest,
    plan: Plan,
    admission: Admission,
    cached_tokens: int,
) -> web.Response:
    """Wait as long as generation takes, charging output as it goes, then send the whole body."""
    start = time.perf_counter()
    first_token = start + plan.ttft_s
    end = first_token + max(0, plan.output_tokens - 1) / plan.speed_tps
    charged = 0
    while True:
        now = time.perf_counter()
        produced = 0 if now < first_token else min(plan.output_tokens, int((now - first_token) * plan.speed_tps) + 1)
        if produced > charged:
            state.limiter.charge_output(admission, produced - charged)
            state.stats.record_output(produced - charged)
            charged = produced
        if charged >= plan.output_tokens and now >= end:
            break
        await asyncio.sleep(min(_NON_STREAM_STEP_S, max(end - now, 0.0)) or 0.001)

    pool = state.pool
    reasoning_text = pool.text(plan.reasoning_offset, plan.reasoning_tokens) if request.thinking else None
    content_text = pool.text(plan.content_offset, plan.output_tokens - plan.reasoning_tokens)
    usage = _usage(request, plan, cached_tokens, plan.output_tokens, plan.reasoning_tokens)
    request_id = entry["request_id"]
    if api == "openai":
        body = CompatFrames.body(request_id, request.model, content_text, reasoning_text, plan.finish_reason, usage)
    else:
        frames = NativeFrames(request_id, usage, request.thinking, state.config.modality == "vision", request.incremental, request.result_format)
        body = frames.body(content_text, reasoning_text, plan.finish_reason, usage)
    response = _json_response(body, 200, request_id)

    finished = time.time()
    entry["first_token_at"] = finished
    entry["finished_at"] = finished
    entry["output_tokens"] = plan.output_tokens
    entry["reasoning_tokens"] = plan.reasoning_tokens
    entry["finish_reason"] = plan.finish_reason
    entry["outcome"] = "ok"
    entry["status"] = 200
    return response


class _Writer:
    """Writes frames to one SSE response, applying the write-shape faults (keep-alive, split)."""

    def __init__(self, response: web.StreamResponse, faults: set[str], rng: random.Random, keepalive_interval_s: float) -> None:
        self.response = response
        self.keepalive = "keepalive" in faults
        self.keepalive_interval_s = keepalive_interval_s
        self.split = "split" in faults
        self.rng = rng

    async def wait(self, delay_s: float) -> None:
        """Sleep ``delay_s``; with the keepalive fault, send a comment every keepalive_interval_s meanwhile."""
        if not self.keepalive:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            return
        end = time.perf_counter() + delay_s
        while True:
            remaining_s = end - time.perf_counter()
            if remaining_s <= 0:
                return
            if remaining_s < self.keepalive_interval_s:
                await asyncio.sleep(remaining_s)
                return
            await asyncio.sleep(self.keepalive_interval_s)
            await self.response.write(b": keep-alive\n\n")

    async def write(self, text: str) -> None:
        data = text.encode()
        if self.keepalive:
            data = b": keep-alive\n\n" + data
        if self.split and len(data) > 1:
            cut = _split_point(data, self.rng)
            await self.response.write(data[:cut])
            await asyncio.sleep(0.005)
            await self.response.write(data[cut:])
            return
        await self.response.write(data)


def _split_point(data: bytes, rng: random.Random) -> int:
    """Return where to split a write: inside a multi-byte UTF-8 character when there is one, else anywhere."""
    continuation = [index for index, byte in enumerate(data) if 0x80 <= byte < 0xC0]
    if continuation:
        return rng.choice(continuation)
    return rng.randrange(1, len(data))


def _reset_connection(http_request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
    transport = http_request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            logger.debug("Could not set SO_LINGER before a reset")
    transport.abort()


async def _stream(
    http_request: web.Request,
    state: SimulatorState,
    entry: RequestEntry,
    api: str,
    request: ChatRequest,
    plan: Plan,
    admission: Admission,
    cached_tokens: int,
) -> web.StreamResponse:
    """Stream the response chunk by chunk on the latency model's schedule."""
    config = state.config
    request_id = entry["request_id"]
    headers = dict(_SSE_HEADERS_NATIVE if api == "dashscope" else _SSE_HEADERS_COMPAT)
    headers["x-request-id"] = request_id
    response = web.StreamResponse(status=200, headers=headers)
    await response.prepare(http_request)

    vision = config.modality == "vision"
    compat = CompatFrames(request_id, request.model, request.thinking, request.include_usage) if api == "openai" else None
    native = (
        NativeFrames(request_id, _usage(request, plan, cached_tokens, 0, 0), request.thinking, vision, request.incremental, request.result_format)
        if api == "dashscope"
        else None
    )
    writer = _Writer(response, plan.faults, state.rng, config.keepalive_interval_s)
    pool = state.pool
    total = plan.output_tokens
    reasoning_total = plan.reasoning_tokens
    per_chunk = plan.tokens_per_chunk
    chunks = _chunk_bounds(reasoning_total, total, per_chunk)
    # Mid-stream faults strike after the first chunk when there is more than one.
    fault_at = state.rng.randrange(1, len(chunks)) if len(chunks) > 1 else 0
    coalesce = config.coalesce_events if "coalesce" in plan.faults else 1

    start = time.perf_counter()
    first_token_s = start + plan.ttft_s
    interval_s = 1.0 / plan.speed_tps
    pending: list[str] = []
    if compat is not None:
        if "role_gap" in plan.faults:
            await writer.wait(first_token_s - time.perf_counter())
            first_token_s += config.role_gap_s
            await writer.write(compat.role())
        else:
            pending.append(compat.role())

    produced = 0
    pending_tokens = 0
    index = 0
    try:
        while index < len(chunks):
            chunk_start, chunk_end = chunks[index]
            due_s = first_token_s + (chunk_end - 1) * interval_s
            delay_s = due_s - time.perf_counter()
            if delay_s > _MIN_SLEEP_S:
                # The role chunk waits for the first token; text waits until `coalesce` events are pending.
                if pending_tokens and len(pending) >= coalesce:
                    await _flush(writer, pending, state, admission, entry, pending_tokens)
                    pending_tokens = 0
                await writer.wait(delay_s)

            if index == fault_at and plan.faults & _MID_STREAM_FAULTS:
                if pending:
                    await _flush(writer, pending, state, admission, entry, pending_tokens)
                    pending_tokens = 0
                if "stream_error" in plan.faults:
                    if native is not None:
                        frame = native.error("internal")
                    else:
                        frame = sse_error_frame("openai", "internal", request_id, index + 1, compat_shape=config.compat_stream_error)
                    await writer.write(frame)
                    _finish_entry(entry, "stream_error", 500, ERRORS["internal"].native_code if native else ERRORS["internal"].compat_code)
                    await response.write_eof()
                    return response
                if "reset" in plan.faults:
                    _finish_entry(entry, "connection_reset", 200, None)
                    _reset_connection(http_request)
                    return response
                if "truncate" in plan.faults and http_request.transport is not None:
                    _finish_entry(entry, "truncated", 200, None)
                    http_request.transport.close()
                    return response
                if "stall" in plan.faults:
                    await writer.wait(config.stall_s)
                    first_token_s += config.stall_s
                if "malformed" in plan.faults:
                    await writer.write(native.malformed() if native is not None else compat.malformed())  # type: ignore[union-attr]

            reasoning = chunk_start < reasoning_total
            text = _chunk_text(pool, plan, chunk_start, chunk_end, reasoning_total)
            produced = chunk_end
            if native is not None:
                pending.append(native.text(text, reasoning, produced, min(produced, reasoning_total)))
            else:
                pending.append(compat.text(text, reasoning, produced))  # type: ignore[union-attr]
            pending_tokens += chunk_end - chunk_start
            index += 1

        usage = _usage(request, plan, cached_tokens, total, reasoning_total)
        pending.append(native.finish(plan.finish_reason, usage) if native is not None else compat.finish(plan.finish_reason, usage))  # type: ignore[union-attr]
        await _flush(writer, pending, state, admission, entry, pending_tokens)
        entry["finish_reason"] = plan.finish_reason
        entry["reasoning_tokens"] = reasoning_total
        _finish_entry(entry, "ok", 200, None)
        await response.write_eof()
    except ConnectionError:
        _finish_entry(entry, "client_disconnect", 200, None)
        logger.debug("Client disconnected from request %s after %d tokens", request_id, entry["output_tokens"])
    return response


def _chunk_bounds(reasoning_total: int, total: int, per_chunk: int) -> list[tuple[int, int]]:
    """Return [start, end) token ranges of the chunks. Reasoning and content never share a chunk."""
    bounds: list[tuple[int, int]] = []
    for begin, end in ((0, reasoning_total), (reasoning_total, total)):
        position = begin
        while position < end:
            bounds.append((position, min(position + per_chunk, end)))
            position += per_chunk
    return bounds


def _chunk_text(pool: TokenPool, plan: Plan, start: int, end: int, reasoning_total: int) -> str:
    if start < reasoning_total:
        offset, base = plan.reasoning_offset, 0
    else:
        offset, base = plan.content_offset, reasoning_total
    if end - start == 1:
        return pool.piece_escaped(offset, start - base)
    return "".join(pool.piece_escaped(offset, index - base) for index in range(start, end))


async def _flush(
    writer: _Writer,
    pending: list[str],
    state: SimulatorState,
    admission: Admission,
    entry: RequestEntry,
    tokens: int,
) -> None:
    """Write the pending frames as one write and account for their tokens."""
    text = "".join(pending)
    pending.clear()
    await writer.write(text)
    if tokens:
        if entry["first_token_at"] is None:
            entry["first_token_at"] = time.time()
        entry["output_tokens"] += tokens
        state.limiter.charge_output(admission, tokens)
        state.stats.record_output(tokens)


def _finish_entry(entry: RequestEntry, outcome: str, status: int, error_code: str | None) -> None:
    entry["outcome"] = outcome
    entry["status"] = status
    entry["error_code"] = error_code
    entry["finished_at"] = time.time()


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
