"""Profile files (YAML): parsing and validation into typed profiles.

A leaf profile describes one kind of request. A mix profile is a weighted list of leaf
profiles, given by reference to a built-in or another file, or inline. Nested mixes are
flattened, so a mix is always a list of leaves with weights that sum to 1.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..i18n import _
from .builtin import builtin_profiles_folder
from .distributions import Distribution, parse_distribution
from .schema import ProfileSource, SchemaError

__all__ = [
    "LANGUAGE_CHOICES",
    "TASKS",
    "DatasetSpec",
    "ImageSpec",
    "LeafProfile",
    "MixProfile",
    "Profile",
    "SystemPromptSpec",
    "builtin_profile_names",
    "load_profile",
    "parse_profile",
]

TASKS = ("chat", "rag", "summarize", "code")
LANGUAGE_CHOICES = ("zh", "en", "mixed")

# Largest sizes of one request that a profile may ask for (docs/profiles.md). Beyond them no Qwen
# deployment accepts the request, and building prompts of that size stalls ``workload show``.
MAX_INPUT_TOKENS = 1_000_000
MAX_OUTPUT_TOKENS = 100_000
MAX_IMAGES = 32
SYSTEM_STYLES = ("prose", "tools")

_LEAF_KEYS = (
    "name",
    "description",
    "language",
    "task",
    "system_prompt",
    "input_tokens",
    "output_tokens",
    "turns",
    "thinking",
    "images",
    "extra_params",
    "weight",
)
_MIX_KEYS = ("name", "description", "mix", "weight")
_DATASET_KEYS = ("name", "description", "dataset", "weight")
_MIX_ENTRY_KEYS = ("profile", "weight", "name")
_SYSTEM_KEYS = ("text", "tokens", "style", "nonce")
_IMAGE_KEYS = ("count", "sizes")
_DATASET_SPEC_KEYS = ("path", "order", "max_tokens")


@dataclass(frozen=True)
class SystemPromptSpec:
    """The system message: fixed ``text`` or generated to ``tokens``; ``nonce`` makes each request's unique."""

    text: str | None
    tokens: int | None
    style: str  # prose | tools (tool definitions, as agent frameworks send them)
    nonce: bool


@dataclass(frozen=True)
class ImageSpec:
    """Images attached to the last user message: a count distribution and weighted sizes in pixels."""

    count: Distribution
    sizes: tuple[tuple[int, int], ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """A JSONL file of message lists replayed in file order or shuffled."""

    path: Path
    order: str  # in-order | shuffled
    max_tokens: int


@dataclass(frozen=True)
class LeafProfile:
    """One kind of request. ``input_tokens`` counts text prompt tokens with the chat template."""

    name: str
    description: str
    language: str
    task: str
    system_prompt: SystemPromptSpec | None
    input_tokens: Distribution
    output_tokens: Distribution
    turns: Distribution
    thinking: bool | None
    images: ImageSpec | None
    extra_params: Mapping[str, Any]
    weight: float
    source: ProfileSource


@dataclass(frozen=True)
class MixProfile:
    """A weighted mix of leaf profiles; ``variants`` weights sum to 1."""

    name: str
    description: str
    variants: tuple[tuple[LeafProfile, float], ...]
    weight: float
    source: ProfileSource


@dataclass(frozen=True)
class DatasetProfile:
    """A profile that replays a dataset file."""

    name: str
    description: str
    dataset: DatasetSpec
    weight: float
    source: ProfileSource


Profile = LeafProfile | MixProfile | DatasetProfile


def builtin_profile_names() -> list[str]:
    """Return the names of the built-in profiles."""
    folder = builtin_profiles_folder()
    return sorted(item.name[: -len(".yaml")] for item in folder.iterdir() if item.name.endswith(".yaml"))


def _builtin_path(name: str) -> Path | None:
    item = builtin_profiles_folder().joinpath(f"{name}.yaml")
    return Path(str(item)) if item.is_file() else None


def load_profile(name_or_path: str, *, _stack: tuple[str, ...] = ()) -> Profile:
    """Load a built-in profile by name or a profile file by path; InputError when invalid."""
    path = _builtin_path(name_or_path) if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")) else None
    if path is not None:
        label = _("built-in profile {name} ({path})").format(name=name_or_path, path=path)
    else:
        path = Path(name_or_path)
        label = str(path)
        if not path.is_file():
            known = ", ".join(builtin_profile_names())
            raise InputError(
                _("Profile '{name}' not found: it is neither a built-in profile ({known}) nor an existing file. Fix the name or the path.").format(
                    name=name_or_path, known=known
                )
            )
    key = str(path.resolve())
    if key in _stack:
        raise InputError(_("Profile {file} includes itself through its mix: {chain}. Remove the cycle.").format(file=label, chain=" -> ".join([*_stack, key])))
    source = ProfileSource(label)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(_("Profile file {file} cannot be read: {error}.").format(file=label, error=error)) from error
    except UnicodeDecodeError:
        raise InputError(_("Profile file {file} is not UTF-8 text. Save it as UTF-8.").format(file=label)) from None
    except yaml.YAMLError as error:
        raise InputError(_("Profile file {file} is not valid YAML: {error}. Fix the syntax.").format(file=label, error=error)) from error
    return parse_profile(data, source=source, base_dir=path.parent, stack=(*_stack, key))


def parse_profile(data: Any, *, source: ProfileSource, base_dir: Path, stack: tuple[str, ...] = ()) -> Profile:
    """Validate a profile mapping read from YAML."""
    if not isinstance(data, Mapping):
        raise SchemaError(source, "(top level)", data, _("a mapping of keys is expected."), _("start the file with name: and description:."))
    name = _name(data, source)
    if "mix" in data:
        _check_keys(data, _MIX_KEYS, source, "")
        return _parse_mix(data, name=name, source=source, base_dir=base_dir, stack=stack)
    if "dataset" in data:
        _check_keys(data, _DATASET_KEYS, source, "")
        return DatasetProfile(
            name=name,
            description=_text(data, "description", source, ""),
            dataset=_parse_dataset(data["dataset"], source=source, base_dir=base_dir),
            weight=_weight(data, "weight", source),
            source=source,
        )
    return _parse_leaf(data, name=name, source=source, base_dir=base_dir, prefix="")


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], source: ProfileSource, prefix: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            fix = (
                _("did you mean '{close}'? Allowed keys: {allowed}.").format(close=close[0], allowed=", ".join(allowed))
                if close
                else _("remove it. Allowed keys: {allowed}.").format(allowed=", ".join(allowed))
            )
            raise SchemaError(source, f"{prefix}{key}", data[key], _("unknown key."), fix)


def _name(data: Mapping[str, Any], source: ProfileSource, prefix: str = "") -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or any(char.isspace() for char in name):
        raise SchemaError(source, f"{prefix}name", name, _("a name without spaces is expected."), _("set name: to e.g. chat-short."))
    return name


def _text(data: Mapping[str, Any], key: str, source: ProfileSource, prefix: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise SchemaError(source, f"{prefix}{key}", value, _("text is expected."), _("quote the value."))
    return value


def _weight(data: Mapping[str, Any], key: str, source: ProfileSource, prefix: str = "", default: float = 1.0) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SchemaError(source, f"{prefix}{key}", value, _("a positive number is expected."), _("set {key}: to a number > 0.").format(key=key))
    return float(value)


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str, source: ProfileSource, prefix: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise SchemaError(source, f"{prefix}{key}", value, _("unknown value."), _("use one of: {choices}.").format(choices=", ".join(choices)))
    return str(value)


def _parse_leaf(data: Mapping[str, Any], *, name: str, source: ProfileSource, base_dir: Path, prefix: str) -> LeafProfile:
    _check_keys(data, _LEAF_KEYS, source, prefix)
    for required in ("input_tokens", "output_tokens"):
        if required not in data:
            raise SchemaError(source, f"{prefix}{required}", None, _("the key is missing."), _("add {key}: with a number or a distribution.").format(key=required))

    def resolve(relative: str) -> Path:
        return (base_dir / relative).resolve()

    thinking = data.get("thinking")
    if thinking is not None and not isinstance(thinking, bool):
        raise SchemaError(source, f"{prefix}thinking", thinking, _("true or false is expected."), _("write thinking: true, thinking: false, or remove the key."))
    extra = data.get("extra_params", {})
    if not isinstance(extra, Mapping) or not all(isinstance(key, str) for key in extra):
        raise SchemaError(source, f"{prefix}extra_params", extra, _("a mapping of request fields is expected."), _("write e.g. extra_params: {{temperature: 0.7}}."))
    reserved = {"model", "messages", "max_tokens", "stream", "enable_thinking"} & set(extra)
    if reserved:
        field_name = min(reserved)
        raise SchemaError(
            source,
            f"{prefix}extra_params.{field_name}",
            extra[field_name],
            _("this request field is set by the load generator."),
            _("remove it; use output_tokens for max_tokens and thinking for enable_thinking."),
        )

    return LeafProfile(
        name=name,
        description=_text(data, "description", source, prefix),
        language=_choice(data, "language", LANGUAGE_CHOICES, "zh", source, prefix),
        task=_choice(data, "task", TASKS, "chat", source, prefix),
        system_prompt=_parse_system(data.get("system_prompt"), source=source, prefix=f"{prefix}system_prompt"),
        input_tokens=_bounded(
            parse_distribution(data["input_tokens"], source=source, key=f"{prefix}input_tokens", minimum=1, resolve_file=resolve), MAX_INPUT_TOKENS, source, f"{prefix}input_tokens"
        ),
        output_tokens=_bounded(
            parse_distribution(data["output_tokens"], source=source, key=f"{prefix}output_tokens", minimum=1, resolve_file=resolve), MAX_OUTPUT_TOKENS, source, f"{prefix}output_tokens"
        ),
        turns=parse_distribution(data.get("turns", 1), source=source, key=f"{prefix}turns", minimum=1, resolve_file=resolve),
        thinking=thinking,
        images=_parse_images(data.get("images"), source=source, prefix=f"{prefix}images", resolve=resolve),
        extra_params=dict(extra),
        weight=_weight(data, "weight", source, prefix),
        source=source,
    )


def _bounded(distribution: Distribution, limit: int, source: ProfileSource, key: str) -> Distribution:
    """Reject a distribution that can exceed ``limit``; clip an open-ended one (normal, lognormal) at it."""
    highest = distribution.maximum
    if highest is None and distribution.values:
        highest = max(high for _low, high in distribution.values)
    if highest is None:
        return replace(distribution, maximum=limit)
    if highest > limit or distribution.minimum > limit:
        raise SchemaError(
            source, key, max(highest, distribution.minimum), _("at most {limit} per request is supported.").format(limit=limit), _("lower the value or the distribution's max.")
        )
    return distribution


def _parse_system(value: Any, *, source: ProfileSource, prefix: str) -> SystemPromptSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        return SystemPromptSpec(text=value, tokens=None, style="prose", nonce=False)
    if not isinstance(value, Mapping):
        raise SchemaError(source, prefix, value, _("text or a mapping is expected."), _("write system_prompt: {{tokens: 500}} or system_prompt: \"You are ...\"."))
    _check_keys(value, _SYSTEM_KEYS, source, f"{prefix}.")
    if ("text" in value) == ("tokens" in value):
        raise SchemaError(source, prefix, dict(value), _("exactly one of 'text' or 'tokens' is expected."), _("keep text: for a fixed prompt or tokens: N for a generated one."))
    text = value.get("text")
    if text is not None and (not isinstance(text, str) or not text):
        raise SchemaError(source, f"{prefix}.text", text, _("non-empty text is expected."), _("quote the system prompt."))
    tokens = value.get("tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 20):
        raise SchemaError(source, f"{prefix}.tokens", tokens, _("a whole number of at least 20 is expected."), _("set tokens: to e.g. 500."))
    if tokens is not None and tokens > MAX_INPUT_TOKENS:
        raise SchemaError(source, f"{prefix}.tokens", tokens, _("at most {limit} per request is supported.").format(limit=MAX_INPUT_TOKENS), _("set tokens: to e.g. 500."))
    nonce = value.get("nonce", False)
    if not isinstance(nonce, bool):
        raise SchemaError(source, f"{prefix}.nonce", nonce, _("true or false is expected."), _("write nonce: true to defeat context caching."))
    style = _choice(value, "style", SYSTEM_STYLES, "prose", source, f"{prefix}.")
    if style == "tools" and text is not None:
        raise SchemaError(source, f"{prefix}.style", style, _("the tools style generates the prompt, so it needs 'tokens', not 'text'."), _("replace text: with tokens: N."))
    return SystemPromptSpec(text=text, tokens=tokens, style=style, nonce=nonce)


def _parse_size(item: Any, *, source: ProfileSource, key: str) -> tuple[tuple[int, int], float]:
    weight = 1.0
    if isinstance(item, Mapping):
        _check_keys(item, ("width", "height", "weight"), source, f"{key}.")
        width, height = item.get("width"), item.get("height")
        weight = _weight(item, "weight", source, f"{key}.")
    elif isinstance(item, str) and "x" in item:
        first, _separator, second = item.partition("x")
        width = int(first) if first.strip().isdigit() else None
        height = int(second) if second.strip().isdigit() else None
    else:
        width = height = None
    valid = all(isinstance(side, int) and not isinstance(side, bool) and 1 <= side <= 8192 for side in (width, height))
    if not valid:
        raise SchemaError(source, key, item, _("an image size of 1 to 8192 pixels per side is expected."), _("write \"1280x720\" or {{width: 1280, height: 720, weight: 2}}."))
    assert isinstance(width, int) and isinstance(height, int)
    return (width, height), weight


def _parse_images(value: Any, *, source: ProfileSource, prefix: str, resolve: Any) -> ImageSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SchemaError(source, prefix, value, _("a mapping with 'count' and 'sizes' is expected."), _("write images: {{count: 1, sizes: [\"1280x720\"]}}."))
    _check_keys(value, _IMAGE_KEYS, source, f"{prefix}.")
    sizes_value = value.get("sizes")
    if not isinstance(sizes_value, list) or not sizes_value:
        raise SchemaError(source, f"{prefix}.sizes", sizes_value, _("a non-empty list of sizes is expected."), _("write sizes: [\"1280x720\", \"1920x1080\"]."))
    parsed = [_parse_size(item, source=source, key=f"{prefix}.sizes[{index}]") for index, item in enumerate(sizes_value)]
    count = _bounded(parse_distribution(value.get("count", 1), source=source, key=f"{prefix}.count", minimum=0, resolve_file=resolve), MAX_IMAGES, source, f"{prefix}.count")
    return ImageSpec(count=count, sizes=tuple(size for size, _weight in parsed), weights=tuple(weight for _size, weight in parsed))


def _parse_dataset(value: Any, *, source: ProfileSource, base_dir: Path) -> DatasetSpec:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, Mapping):
        raise SchemaError(source, "dataset", value, _("a path or a mapping with 'path' is expected."), _("write dataset: {{path: prompts.jsonl, order: shuffled}}."))
    _check_keys(value, _DATASET_SPEC_KEYS, source, "dataset.")
    raw_path = value.get("path")
    if not isinstance(raw_path, str) or not raw_path:
        raise SchemaError(source, "dataset.path", raw_path, _("a file path is expected."), _("set path: to a JSONL file, relative to the profile."))
    path = (base_dir / raw_path).resolve()
    if not path.is_file():
        raise SchemaError(source, "dataset.path", raw_path, _("the file does not exist ({path}).").format(path=path), _("fix the path; it is relative to the profile file."))
    order = _choice(value, "order", ("in-order", "shuffled"), "in-order", source, "dataset.")
    max_tokens = value.get("max_tokens", DEFAULT_DATASET_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise SchemaError(source, "dataset.max_tokens", max_tokens, _("a whole number >= 1 is expected."), _("set max_tokens: to the default for lines without one."))
    if max_tokens > MAX_OUTPUT_TOKENS:
        raise SchemaError(
            source, "dataset.max_tokens", max_tokens, _("at most {limit} per request is supported.").format(limit=MAX_OUTPUT_TOKENS), _("lower the value or the distribution's max.")
        )
    return DatasetSpec(path=path, order=order, max_tokens=max_tokens)


# max_tokens for dataset lines that do not set it.
DEFAULT_DATASET_MAX_TOKENS = 512


def _parse_mix(data: Mapping[str, Any], *, name: str, source: ProfileSource, base_dir: Path, stack: tuple[str, ...]) -> MixProfile:
    entries = data["mix"]
    if not isinstance(entries, list) or not entries:
        raise SchemaError(source, "mix", entries, _("a non-empty list of sub-profiles is expected."), _("write mix: [{{profile: chat, weight: 70}}, {{profile: rag, weight: 30}}]."))
    weighted: list[tuple[LeafProfile, float]] = []
    for index, entry in enumerate(entries):
        prefix = f"mix[{index}]."
        if not isinstance(entry, Mapping):
            raise SchemaError(source, f"mix[{index}]", entry, _("a mapping is expected."), _("write {{profile: chat, weight: 70}} or an inline profile."))
        if "profile" in entry:
            _check_keys(entry, _MIX_ENTRY_KEYS, source, prefix)
            reference = entry["profile"]
            if not isinstance(reference, str) or not reference:
                raise SchemaError(source, f"{prefix}profile", reference, _("a built-in name or a file path is expected."), _("write profile: chat."))
            target = reference if _builtin_path(reference) is not None or Path(reference).is_absolute() else str(base_dir / reference)
            if _builtin_path(reference) is None and not Path(target).is_file():
                raise SchemaError(source, f"{prefix}profile", reference, _("no built-in profile or file has this name."), _("use a built-in name or a path relative to this file."))
            child = load_profile(reference if _builtin_path(reference) is not None else target, _stack=stack)
            weight = _weight(entry, "weight", source, prefix, default=child.weight)
            if isinstance(child, DatasetProfile):
                raise SchemaError(source, f"{prefix}profile", reference, _("a dataset profile cannot be part of a mix."), _("mix only generated profiles."))
            if isinstance(child, MixProfile):
                weighted.extend((leaf, weight * share) for leaf, share in child.variants)
            else:
                if "name" in entry:
                    child = _renamed(child, _name(entry, source, prefix))
                weighted.append((child, weight))
        else:
            leaf_name = _name(entry, source, prefix)
            leaf = _parse_leaf(entry, name=leaf_name, source=source, base_dir=base_dir, prefix=prefix)
            weighted.append((leaf, leaf.weight))
    seen: set[str] = set()
    for leaf, _share in weighted:
        if leaf.name in seen:
            raise SchemaError(source, "mix", leaf.name, _("duplicate variant name: the results of the two variants would be mixed."), _("give one of them another name: with name:."))
        seen.add(leaf.name)
    total = sum(weight for _leaf, weight in weighted)
    return MixProfile(
        name=name,
        description=_text(data, "description", source, ""),
        variants=tuple((leaf, weight / total) for leaf, weight in weighted),
        weight=_weight(data, "weight", source),
        source=source,
    )


def _renamed(leaf: LeafProfile, name: str) -> LeafProfile:
    return replace(leaf, name=name)
