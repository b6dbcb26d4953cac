"""Generating a response: the streaming schedule, the write-shape faults and the whole-body path."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .limiter import Admission
from .parse import ChatRequest
from .protocol import ERRORS, CompatFrames, NativeFrames, Usage, sse_error_frame
from .stats import RequestEntry
from .textgen import TokenPool

if TYPE_CHECKING:
    from .server import SimulatorState

__all__ = ["Plan", "json_response", "sse_headers", "stream_response", "whole_response"]

logger = logging.getLogger(__name__)

# A chunk due sooner than this is written with the current batch instead of sleeping for it.
_MIN_SLEEP_S = 0.002
_MID_STREAM_FAULTS = frozenset({"stream_error", "reset", "truncate", "stall", "malformed"})
# Non-streaming responses charge generated output in steps of this length.
_NON_STREAM_STEP_S = 0.5


def sse_headers(api: str, request_id: str) -> dict[str, str]:
    """Return the headers of an event stream in the API's style, with x-request-id."""
    content_type = "text/event-stream;charset=UTF-8" if api == "dashscope" else "text/event-stream; charset=utf-8"
    return {"Content-Type": content_type, "Cache-Control": "no-cache", "x-request-id": request_id}


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


def json_response(body: dict[str, Any], status: int, request_id: str) -> web.Response:
    """Return a JSON response carrying x-request-id."""
    return web.Response(
        body=json.dumps(body, ensure_ascii=False).encode(),
        status=status,
        content_type="application/json",
        headers={"x-request-id": request_id},
    )


def _usage(request: ChatRequest, plan: Plan, cached_tokens: int, output_tokens: int, reasoning_tokens: int) -> Usage:
    return Usage(
        input_tokens=request.input_tokens,
        cached_tokens=cached_tokens,
        image_tokens=request.image_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
    )


async def whole_response(
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
    response = json_response(body, 200, request_id)

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


async def stream_response(
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
    response = web.StreamResponse(status=200, headers=sse_headers(api, request_id))
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
    produced = 0
    pending_tokens = 0
    index = 0
    try:
        await response.prepare(http_request)
        if compat is not None:
            if "role_gap" in plan.faults:
                await writer.wait(first_token_s - time.perf_counter())
                first_token_s += config.role_gap_s
                await writer.write(compat.role())
            else:
                pending.append(compat.role())

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
