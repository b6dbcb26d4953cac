"""Simulator configuration: the deployment, its capacity, the latency model, the limiter and the faults."""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..catalog import Capacity, load_catalog
from ..errors import InputError
from ..i18n import _

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "FAMILY_LATENCY",
    "FAULT_NAMES",
    "FamilyLatency",
    "FaultWindow",
    "SimulatorConfig",
    "load_config_file",
]

logger = logging.getLogger(__name__)

LimiterKind = Literal["sliding_window", "token_bucket"]
AdmissionKind = Literal["input_then_output", "reserve_max_tokens"]
ErrorStyle = Literal["http", "sse_event"]
CompatStreamError = Literal["event", "data"]

# Fault names accepted in ``faults`` (probability per request) and in ``fault_schedule``.
FAULT_NAMES: tuple[str, ...] = (
    "http_500",  # return 500 InternalError instead of serving
    "http_503",  # return 503 ModelUnavailable instead of serving
    "stream_error",  # in-band event:error frame in the middle of a stream, then end the stream
    "reset",  # TCP reset (SO_LINGER 0) in the middle of a stream
    "truncate",  # clean close (FIN) in the middle of a stream, with no finish event
    "stall",  # no bytes for stall_s seconds in the middle of a stream
    "malformed",  # one extra event whose JSON is cut short, in the middle of a stream
    "keepalive",  # an SSE comment before every write and every keepalive_interval_s while waiting
    "coalesce",  # coalesce_events events per write
    "split",  # every write sent in two parts, cut inside a multi-byte character when there is one
    "multi_token",  # multi_token_count tokens per chunk instead of tokens_per_chunk
    "role_gap",  # compat: the role-only chunk is sent alone, role_gap_s before the first token
)


@dataclass(frozen=True)
class FamilyLatency:
    """Latency defaults of one model family.

    TTFT = ttft_base_s + prefill_s_per_token × uncached input tokens (+ queueing past the knee);
    generation runs at speed_tps tokens/s with a lognormal jitter of relative width speed_jitter.
    """

    ttft_base_s: float
    prefill_s_per_token: float
    speed_tps: float
    speed_jitter: float = 0.1


# Estimates in the range public benchmarks report for these families on dedicated capacity;
# they set plausible shapes, not measured Bailian figures. Override them with the knobs.
FAMILY_LATENCY: dict[str, FamilyLatency] = {
    "qwen-turbo": FamilyLatency(ttft_base_s=0.15, prefill_s_per_token=0.00004, speed_tps=90.0),
    "qwen-plus": FamilyLatency(ttft_base_s=0.25, prefill_s_per_token=0.00008, speed_tps=60.0),
    "qwen-max": FamilyLatency(ttft_base_s=0.40, prefill_s_per_token=0.00015, speed_tps=35.0),
    "qwen-vl-plus": FamilyLatency(ttft_base_s=0.30, prefill_s_per_token=0.00010, speed_tps=60.0),
    "qwen-vl-max": FamilyLatency(ttft_base_s=0.50, prefill_s_per_token=0.00020, speed_tps=30.0),
}
_DEFAULT_LATENCY = FamilyLatency(ttft_base_s=0.30, prefill_s_per_token=0.0001, speed_tps=50.0)


@dataclass(frozen=True)
class FaultWindow:
    """A fault applied with ``probability`` to requests arriving between start_s and end_s after start-up."""

    fault: str
    start_s: float
    end_s: float
    probability: float = 1.0


@dataclass
class SimulatorConfig:
    """Everything the simulated deployment needs. Build it with :meth:`for_model`."""

    # The deployment.
    model_version: str
    family: str
    modality: Literal["text", "vision"]
    ptu: int
    capacity: Capacity
    deployment_code: str
    vision_patch_px: int = 28
    seed: int | None = None
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0

    # Capacity and limiter.
    capacity_factor: float = 1.0
    limiter: LimiterKind = "sliding_window"
    window_s: float = 60.0
    burst_s: float = 10.0
    admission: AdmissionKind = "input_then_output"
    enforce_qpm: bool = True
    burst_rps: float | None = None

    # Latency model.
    ttft_base_s: float | None = None
    prefill_s_per_token: float | None = None
    speed_tps: float | None = None
    speed_jitter: float | None = None
    concurrency_knee: int | None = None
    ttft_factor: float = 1.0
    speed_factor: float = 1.0

    # Tokens and text.
    natural_length_median: float = 1000.0
    natural_length_sigma: float = 0.6
    natural_length_fixed: int | None = None
    max_output_tokens: int = 8192
    reasoning_share: float = 0.5
    tokens_per_chunk: int = 1
    prompt_cache: bool = True
    cache_min_tokens: int = 256
    template_per_message: int = 5
    template_reply_primer: int = 3
    template_thinking_off: int = 0
    template_per_image: int = 0
    default_image_width: int = 1024
    default_image_height: int = 1024

    # Protocol.
    error_style: ErrorStyle = "http"
    compat_stream_error: CompatStreamError = "event"
    max_body_bytes: int = 8 * 1024 * 1024

    # Faults.
    faults: dict[str, float] = field(default_factory=dict)
    fault_schedule: list[FaultWindow] = field(default_factory=list)
    stall_s: float = 5.0
    keepalive_interval_s: float = 0.5
    coalesce_events: int = 4
    multi_token_count: int = 4
    role_gap_s: float = 1.0

    @classmethod
    def for_model(
        cls,
        model: str,
        ptu: int,
        *,
        deployment_code: str | None = None,
        catalog_path: str | Path | None = None,
        **knobs: Any,
    ) -> SimulatorConfig:
        """Resolve ``model`` through the PTU catalog and build a validated configuration.

        ``knobs`` are any other field of this class. Raises InputError on an unknown model, knob or value.
        """
        catalog = load_catalog(catalog_path)
        resolution = catalog.resolve(model)
        spec = resolution.spec
        if isinstance(ptu, bool) or not isinstance(ptu, int) or ptu <= 0:
            raise InputError(_("--ptu must be a positive whole number, got {value!r}.").format(value=ptu))
        code = deployment_code or resolution.deployment_code or f"{spec.family}-sim{ptu:04d}"

        known = {f.name for f in dataclasses.fields(cls)} - _DERIVED_FIELDS
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise InputError(
                _("Unknown simulator setting '{key}'. Known settings: {known}.").format(key=unknown[0], known=", ".join(sorted(known)))
            )
        config = cls(
            model_version=spec.version,
            family=spec.family,
            modality=spec.modality,
            ptu=ptu,
            capacity=spec.capacity(ptu),
            deployment_code=code,
            vision_patch_px=spec.vision_patch_px or 28,
            **_coerce_knobs(knobs),
        )
        config.validate()
        return config

    @property
    def latency(self) -> FamilyLatency:
        """The effective latency parameters: family defaults overridden by explicit knobs."""
        base = FAMILY_LATENCY.get(self.family, _DEFAULT_LATENCY)
        return FamilyLatency(
            ttft_base_s=base.ttft_base_s if self.ttft_base_s is None else self.ttft_base_s,
            prefill_s_per_token=base.prefill_s_per_token if self.prefill_s_per_token is None else self.prefill_s_per_token,
            speed_tps=base.speed_tps if self.speed_tps is None else self.speed_tps,
            speed_jitter=base.speed_jitter if self.speed_jitter is None else self.speed_jitter,
        )

    @property
    def effective_knee(self) -> int:
        """Concurrent requests up to which latency stays stable.

        The default is the concurrency that the whole TPM would need if it were all output at the
        nominal speed (at least 8): past it the deployment is over its promise.
        """
        if self.concurrency_knee is not None:
            return self.concurrency_knee
        per_second = self.capacity.total_tpm * self.capacity_factor / 60.0
        return max(8, int(per_second / self.latency.speed_tps + 0.5))

    def model_names(self) -> tuple[str, ...]:
        """Return the model names the deployment accepts: its deployment code and its model version."""
        return (self.deployment_code, self.model_version)

    def public_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready data, without the API key."""
        data = dataclasses.asdict(self)
        data["api_key"] = "set" if self.api_key else None
        data["effective_knee"] = self.effective_knee
        data["latency"] = dataclasses.asdict(self.latency)
        return data

    def validate(self) -> None:
        """Raise InputError naming the first invalid setting."""
        positive = {
            "capacity_factor": self.capacity_factor,
            "window_s": self.window_s,
            "burst_s": self.burst_s,
            "ttft_factor": self.ttft_factor,
            "speed_factor": self.speed_factor,
            "natural_length_median": self.natural_length_median,
            "max_output_tokens": self.max_output_tokens,
            "tokens_per_chunk": self.tokens_per_chunk,
            "max_body_bytes": self.max_body_bytes,
            "coalesce_events": self.coalesce_events,
            "keepalive_interval_s": self.keepalive_interval_s,
            "multi_token_count": self.multi_token_count,
            "default_image_width": self.default_image_width,
            "default_image_height": self.default_image_height,
        }
        for name in ("speed_tps", "burst_rps", "concurrency_knee", "natural_length_fixed"):
            value = getattr(self, name)
            if value is not None:
                positive[name] = value
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InputError(_("Simulator setting '{key}' must be a positive number, got {value!r}.").format(key=name, value=value))

        non_negative = {
            "natural_length_sigma": self.natural_length_sigma,
            "cache_min_tokens": self.cache_min_tokens,
            "stall_s": self.stall_s,
            "role_gap_s": self.role_gap_s,
            "template_per_message": self.template_per_message,
            "template_reply_primer": self.template_reply_primer,
            "template_thinking_off": self.template_thinking_off,
            "template_per_image": self.template_per_image,
        }
        for name in ("ttft_base_s", "prefill_s_per_token", "speed_jitter"):
            value = getattr(self, name)
            if value is not None:
                non_negative[name] = value
        for name, value in non_negative.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InputError(_("Simulator setting '{key}' must be zero or more, got {value!r}.").format(key=name, value=value))

        for name in ("enforce_qpm", "prompt_cache"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(
                    _("Simulator setting '{key}' must be true or false, got {value!r}.").format(key=name, value=getattr(self, name))
                )
        for name in _WHOLE_NUMBER_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InputError(_("Simulator setting '{key}' must be a whole number, got {value!r}.").format(key=name, value=value))
        if not isinstance(self.reasoning_share, (int, float)) or not 0 <= self.reasoning_share < 1:
            raise InputError(
                _("Simulator setting 'reasoning_share' must be at least 0 and below 1, got {value!r}.").format(value=self.reasoning_share)
            )
        choices = {
            "limiter": ("sliding_window", "token_bucket"),
            "admission": ("input_then_output", "reserve_max_tokens"),
            "error_style": ("http", "sse_event"),
            "compat_stream_error": ("event", "data"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(
                    _("Simulator setting '{key}' must be one of {choices}, got {value!r}.").format(
                        key=name, choices=", ".join(allowed), value=getattr(self, name)
                    )
                )
        for name, probability in self.faults.items():
            _check_fault(name, probability, "faults")
        for window in self.fault_schedule:
            _check_fault(window.fault, window.probability, "fault_schedule")
            if window.end_s <= window.start_s:
                raise InputError(
                    _("fault_schedule entry for '{fault}': end_s ({end}) must be after start_s ({start}).").format(
                        fault=window.fault, end=window.end_s, start=window.start_s
                    )
                )


_WHOLE_NUMBER_FIELDS = (
    "port",
    "seed",
    "concurrency_knee",
    "natural_length_fixed",
    "max_output_tokens",
    "tokens_per_chunk",
    "cache_min_tokens",
    "template_per_message",
    "template_reply_primer",
    "template_thinking_off",
    "template_per_image",
    "default_image_width",
    "default_image_height",
    "max_body_bytes",
    "coalesce_events",
    "multi_token_count",
)

# Fields set from the catalog, not accepted as knobs.
_DERIVED_FIELDS = frozenset({"model_version", "family", "modality", "ptu", "capacity", "deployment_code"})


def _check_fault(name: str, probability: Any, where: str) -> None:
    if name not in FAULT_NAMES:
        raise InputError(
            _("Unknown fault '{fault}' in {where}. Known faults: {known}.").format(fault=name, where=where, known=", ".join(FAULT_NAMES))
        )
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise InputError(
            _("Fault '{fault}' in {where}: probability must be between 0 and 1, got {value!r}.").format(
                fault=name, where=where, value=probability
            )
        )


def _coerce_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Turn plain data (from a file or keyword arguments) into field values."""
    values = dict(knobs)
    schedule = values.get("fault_schedule")
    if schedule is not None:
        windows: list[FaultWindow] = []
        if not isinstance(schedule, list):
            raise InputError(_("Simulator setting 'fault_schedule' must be a list of tables, got {value!r}.").format(value=schedule))
        for entry in schedule:
            if isinstance(entry, FaultWindow):
                windows.append(entry)
                continue
            if not isinstance(entry, dict) or not {"fault", "start_s", "end_s"} <= set(entry) or set(entry) - {"fault", "start_s", "end_s", "probability"}:
                raise InputError(
                    _("Each fault_schedule entry needs fault, start_s and end_s (probability optional), got {value!r}.").format(value=entry)
                )
            windows.append(
                FaultWindow(
                    fault=str(entry["fault"]),
                    start_s=float(entry["start_s"]),
                    end_s=float(entry["end_s"]),
                    probability=float(entry.get("probability", 1.0)),
                )
            )
        values["fault_schedule"] = windows
    faults = values.get("faults")
    if faults is not None and not isinstance(faults, dict):
        raise InputError(_("Simulator setting 'faults' must be a table of fault name = probability, got {value!r}.").format(value=faults))
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read simulator settings from a YAML (.yaml/.yml) or TOML (.toml) file.

    Keys are SimulatorConfig fields plus model, ptu and deployment_code. Raises InputError naming
    the file and the key when a key is unknown or the file cannot be read.
    """
    file_path = Path(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(
            _("Cannot read simulator config {file}: {error}. Check the path given to --config.").format(file=file_path, error=error.strerror or error)
        ) from None

    data: Any
    if file_path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise InputError(_("Simulator config {file} is not valid TOML: {error}.").format(file=file_path, error=error)) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InputError(_("Simulator config {file} is not valid YAML: {error}.").format(file=file_path, error=error)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(_("Simulator config {file} must hold a table of settings, got {value!r}.").format(file=file_path, value=data))

    known = {f.name for f in dataclasses.fields(SimulatorConfig)} - _DERIVED_FIELDS | {"model", "ptu", "deployment_code"}
    for key in data:
        if key not in known:
            raise InputError(
                _("Simulator config {file}: unknown key '{key}'. Known keys: {known}.").format(
                    file=file_path, key=key, known=", ".join(sorted(known))
                )
            )
    logger.info("Read %d simulator settings from %s", len(data), file_path)
    return data
