"""The PTU catalog: per-model PTU figures, loading, validation and model resolution."""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .errors import InputError
from .i18n import _

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["ModelSpec", "Capacity", "Catalog", "Resolution", "load_catalog"]

logger = logging.getLogger(__name__)

_NUMBER_FIELDS = ("tpm_per_ptu", "input_tpm_per_ptu", "output_tpm_per_ptu", "qpm_per_ptu", "min_purchase_ptu", "vision_patch_px")
_TEXT_FIELDS = ("family", "modality")
_KNOWN_FIELDS = frozenset(_NUMBER_FIELDS + _TEXT_FIELDS)
_MODALITIES = ("text", "vision")
# A deployment code is the family followed by a suffix of letters and digits, e.g. qwen-plus-d824b8ad.
_DEPLOYMENT_SUFFIX = re.compile(r"^[a-z0-9]+$")
_DATE_SUFFIX = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Capacity:
    """Capacity bought by N PTUs of one model, per minute. ``None`` means that limit does not apply."""

    ptu: int
    tpm: int | None
    input_tpm: int | None
    output_tpm: int | None
    qpm: int

    @property
    def total_tpm(self) -> int:
        """Total tokens per minute: the TPM limit, or input + output when only those are set."""
        if self.tpm is not None:
            return self.tpm
        return (self.input_tpm or 0) + (self.output_tpm or 0)


@dataclass(frozen=True)
class ModelSpec:
    """One model version's PTU figures."""

    version: str
    family: str
    modality: Literal["text", "vision"]
    qpm_per_ptu: int
    min_purchase_ptu: int
    tpm_per_ptu: int | None = None
    input_tpm_per_ptu: int | None = None
    output_tpm_per_ptu: int | None = None
    vision_patch_px: int | None = None
    source: str = "built-in"

    @property
    def splits_tpm(self) -> bool:
        """True when input and output capacity are bought separately."""
        return self.input_tpm_per_ptu is not None

    def capacity(self, ptu: int) -> Capacity:
        """Return the capacity of ``ptu`` PTUs of this model."""
        return Capacity(
            ptu=ptu,
            tpm=None if self.tpm_per_ptu is None else self.tpm_per_ptu * ptu,
            input_tpm=None if self.input_tpm_per_ptu is None else self.input_tpm_per_ptu * ptu,
            output_tpm=None if self.output_tpm_per_ptu is None else self.output_tpm_per_ptu * ptu,
            qpm=self.qpm_per_ptu * ptu,
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as a JSON-ready dict."""
        return {
            "version": self.version,
            "family": self.family,
            "modality": self.modality,
            "tpm_per_ptu": self.tpm_per_ptu,
            "input_tpm_per_ptu": self.input_tpm_per_ptu,
            "output_tpm_per_ptu": self.output_tpm_per_ptu,
            "qpm_per_ptu": self.qpm_per_ptu,
            "min_purchase_ptu": self.min_purchase_ptu,
            "vision_patch_px": self.vision_patch_px,
            "source": self.source,
        }


@dataclass(frozen=True)
class Resolution:
    """The model version a user-given name resolved to, and the rule that matched."""

    spec: ModelSpec
    requested: str
    matched_by: Literal["version", "family", "deployment_code"]

    @property
    def deployment_code(self) -> str | None:
        """The deployment code, when the name was one."""
        return self.requested if self.matched_by == "deployment_code" else None


@dataclass
class Catalog:
    """All known model versions, built-in and user-supplied."""

    models: dict[str, ModelSpec] = field(default_factory=dict)

    def known_names(self) -> str:
        """Return the known versions as one comma-separated string, for error messages."""
        return ", ".join(sorted(self.models))

    def resolve(self, name: str) -> Resolution:
        """Resolve a full version, a family or a deployment code to one model version.

        Raises InputError listing the known models when ``name`` is unknown or ambiguous.
        """
        cleaned = name.strip()
        if cleaned in self.models:
            return Resolution(self.models[cleaned], cleaned, "version")

        by_family = [spec for spec in self.models.values() if spec.family == cleaned]
        if len(by_family) == 1:
            logger.info("Model family %s resolved to %s", cleaned, by_family[0].version)
            return Resolution(by_family[0], cleaned, "family")
        if len(by_family) > 1:
            versions = ", ".join(sorted(spec.version for spec in by_family))
            raise InputError(
                _("Model family '{name}' is ambiguous: the catalog has {versions}. Give the full version.").format(
                    name=cleaned, versions=versions
                )
            )

        families = sorted({spec.family for spec in self.models.values()}, key=len, reverse=True)
        for family in families:
            prefix = family + "-"
            suffix = cleaned[len(prefix):]
            if cleaned.startswith(prefix) and _DEPLOYMENT_SUFFIX.match(suffix) and not _DATE_SUFFIX.match(suffix):
                candidates = [spec for spec in self.models.values() if spec.family == family]
                if len(candidates) > 1:
                    versions = ", ".join(sorted(spec.version for spec in candidates))
                    raise InputError(
                        _(
                            "Deployment code '{name}' matches family {family}, which has several versions ({versions}). "
                            "Pass the model version with --model and the code with --deployment-code."
                        ).format(name=cleaned, family=family, versions=versions)
                    )
                logger.info("Deployment code %s resolved to %s", cleaned, candidates[0].version)
                return Resolution(candidates[0], cleaned, "deployment_code")

        raise InputError(
            _(
                "Unknown model '{name}'. Known models: {known}. Give a model version, a family "
                "(e.g. qwen-plus) or a deployment code (e.g. qwen-plus-d824b8ad), or add the model with --catalog FILE."
            ).format(name=cleaned, known=self.known_names())
        )


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(
            _("Catalog file {file} is not valid TOML: {error}. Fix the syntax and run again.").format(file=source, error=error)
        ) from None


def _parse_entry(version: str, entry: Any, source: str, base: ModelSpec | None) -> ModelSpec:
    where = _("catalog file {file}, model '{model}'").format(file=source, model=version)
    if not isinstance(entry, dict):
        raise InputError(_("{where}: expected a table of fields, got {value!r}.").format(where=where, value=entry))

    unknown = sorted(set(entry) - _KNOWN_FIELDS)
    if unknown:
        raise InputError(
            _("{where}: unknown field '{field}'. Allowed fields: {allowed}.").format(
                where=where, field=unknown[0], allowed=", ".join(sorted(_KNOWN_FIELDS))
            )
        )

    values: dict[str, Any] = base.as_dict() if base else {}
    values.pop("version", None)
    values.pop("source", None)
    for name in _NUMBER_FIELDS:
        if name not in entry:
            continue
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(
                _("{where}: field '{field}' must be a positive whole number, got {value!r}.").format(
                    where=where, field=name, value=value
                )
            )
        values[name] = value
    for name in _TEXT_FIELDS:
        if name in entry:
            if not isinstance(entry[name], str) or not entry[name].strip():
                raise InputError(
                    _("{where}: field '{field}' must be a non-empty string, got {value!r}.").format(
                        where=where, field=name, value=entry[name]
                    )
                )
            values[name] = entry[name].strip()

    for required in ("family", "modality", "qpm_per_ptu", "min_purchase_ptu"):
        if values.get(required) is None:
            raise InputError(_("{where}: missing field '{field}'.").format(where=where, field=required))
    if values["modality"] not in _MODALITIES:
        raise InputError(
            _("{where}: field 'modality' must be one of {choices}, got {value!r}.").format(
                where=where, choices=", ".join(_MODALITIES), value=values["modality"]
            )
        )
    has_split = values.get("input_tpm_per_ptu") is not None or values.get("output_tpm_per_ptu") is not None
    if has_split and (values.get("input_tpm_per_ptu") is None or values.get("output_tpm_per_ptu") is None):
        raise InputError(
            _("{where}: give both 'input_tpm_per_ptu' and 'output_tpm_per_ptu', or neither.").format(where=where)
        )
    if values.get("tpm_per_ptu") is None and not has_split:
        raise InputError(
            _("{where}: missing field 'tpm_per_ptu' (or 'input_tpm_per_ptu' with 'output_tpm_per_ptu').").format(where=where)
        )
    return ModelSpec(version=version, source=source, **values)


def _parse_catalog(data: dict[str, Any], source: str, base: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    unknown_top = sorted(set(data) - {"models"})
    if unknown_top:
        raise InputError(
            _("Catalog file {file}: unknown top-level key '{key}'. Put each model under [models.\"VERSION\"].").format(
                file=source, key=unknown_top[0]
            )
        )
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise InputError(
            _("Catalog file {file} has no models. Add a table such as [models.\"qwen-plus-2025-04-28\"].").format(file=source)
        )
    parsed: dict[str, ModelSpec] = {}
    for version, entry in models.items():
        parsed[version] = _parse_entry(version, entry, source, base.get(version))
    return parsed


def _check_duplicates(text: str, source: str) -> None:
    # tomllib already rejects a table defined twice; this catches the same version spelled
    # with different quoting or case, which TOML treats as two keys.
    seen: dict[str, str] = {}
    for match in re.finditer(r"^\s*\[models\.(\"[^\"]+\"|'[^']+'|[A-Za-z0-9_-]+)\]", text, re.MULTILINE):
        version = match.group(1).strip("\"'")
        key = version.lower()
        if key in seen:
            raise InputError(
                _("Catalog file {file}: model '{model}' is defined twice. Keep one entry.").format(file=source, model=version)
            )
        seen[key] = version


def load_catalog(extra: str | Path | None = None) -> Catalog:
    """Load the built-in catalog, then apply ``extra`` (a user TOML file) on top of it.

    Entries in ``extra`` add new models or override fields of built-in ones.
    """
    builtin_text = resources.files("ptu_verify").joinpath("data/catalog.toml").read_text(encoding="utf-8")
    models = _parse_catalog(_read_toml(builtin_text, "built-in catalog"), "built-in", {})
    if extra is None:
        return Catalog(models)

    path = Path(extra)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(
            _("Cannot read catalog file {file}: {error}. Check the path given to --catalog.").format(
                file=path, error=error.strerror or error
            )
        ) from None
    except UnicodeDecodeError:
        raise InputError(_("Catalog file {file} is not UTF-8 text. Save it as UTF-8 and pass it to --catalog again.").format(file=path)) from None
    _check_duplicates(text, str(path))
    overrides = _parse_catalog(_read_toml(text, str(path)), str(path), models)
    for version in overrides:
        action = "overrides" if version in models else "adds"
        logger.info("Catalog file %s %s model %s", path, action, version)
    models.update(overrides)
    return Catalog(models)
