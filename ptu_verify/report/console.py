"""The console summary that ``ptu-verify analyze`` and ``ptu-verify run`` print."""

from __future__ import annotations

from typing import Any

from ..analysis import Summary
from ..cli.common import format_number, format_percent, render_table
from ..i18n import _

__all__ = ["action_text", "format_console_summary"]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def action_text(recommendation: dict[str, Any]) -> str:
    """Return the recommended action as a sentence, or how to get one when no target was given."""
    action = recommendation.get("action")
    delta = abs(recommendation.get("ptu_delta") or 0)
    if action == "scale_up":
        return _("Scale up by {count} PTU to {total} PTU").format(count=delta, total=recommendation["ptu_recommended"])
    if action == "scale_down":
        return _("Scale down by {count} PTU to {total} PTU").format(count=delta, total=recommendation["ptu_recommended"])
    if action == "keep":
        return _("Keep {total} PTU").format(total=recommendation["ptu_recommended"])
    return _("No target given: pass --target-tpm or --target-qpm for a PTU recommendation.")


def capacity_texts(capacity: dict[str, Any]) -> tuple[str, str]:
    """Return the capacity headline's label and its explanation.

    When QPM binds, the headline figure is QPM × tokens per request of this workload, not the TPM
    bought, so it is labelled as such and the purchased TPM and QPM are shown beside it.
    """
    purchased = _("{ptu} PTU of {model} buys {tpm} TPM / {qpm} QPM").format(
        ptu=capacity["ptu"], model=capacity["model"], tpm=format_number(capacity["tpm"]), qpm=format_number(capacity["qpm"])
    )
    if capacity["binding_limit"] == "qpm":
        tokens = float(capacity["tokens_per_request"])
        detail = _("{qpm} QPM × {tokens} tokens/request; QPM binds. {purchased}").format(
            qpm=format_number(capacity["qpm"]), tokens=format_number(tokens, 0 if abs(tokens - round(tokens)) < 0.05 else 1), purchased=purchased
        )
        return _("Capacity for this workload"), detail
    return _("Purchased capacity"), _("TPM binds. {purchased}").format(purchased=purchased)


def format_console_summary(summary: Summary) -> str:
    """Return the verdict, reasons, per-stage table and recommendation as plain text."""
    verdict = {"pass": _("PASS"), "fail": _("FAIL"), "inconclusive": _("INCONCLUSIVE")}[summary.verdict]
    badges = "".join(f" [{text}]" for flag, text in ((summary.simulated, _("SIMULATED")), (summary.partial, _("PARTIAL"))) if flag)
    capacity, sustained = summary.capacity, summary.sustained_tpm
    capacity_label, capacity_detail = capacity_texts(capacity)
    interval = ""
    if sustained.get("ci_low") is not None:
        interval = _(", {level} CI {low} – {high}").format(
            level=format_percent(sustained["level"], 0), low=format_number(sustained["ci_low"]), high=format_number(sustained["ci_high"])
        )
    lines = [
        _("Verdict: {verdict}{badges}  ({model}, {ptu} PTU)").format(verdict=verdict, badges=badges, model=capacity["model"], ptu=capacity["ptu"]),
        *(f"  - {reason}" for reason in summary.reasons),
        "",
        _("{label}: {capacity} TPM ({detail}); sustained achieved {sustained} TPM").format(
            label=capacity_label, capacity=format_number(capacity["effective_tpm"]), detail=capacity_detail, sustained=format_number(sustained.get("value"))
        )
        + interval,
        "",
    ]
    headers = [_("Stage"), _("Offered TPM"), _("Achieved TPM"), _("Utilization"), _("429 share"), _("TTFT p50 s"), _("TTFT p95 s"), _("Speed p50 tok/s"), _("OK / attempts")]
    rows = [
        [
            stage["label"],
            format_number(stage["offered_tpm"]),
            format_number(stage["achieved_tpm"]),
            format_percent(stage["utilization"]),
            format_percent(stage["throttled_share"]),
            _seconds(stage["ttft_p50_s"]),
            _seconds(stage["ttft_p95_s"]),
            format_number(stage["speed_p50_tps"], 1),
            f'{stage["ok_requests"]} / {stage["requests"]}',
        ]
        for stage in summary.stages
    ]
    lines.append(render_table(headers, rows))

    recommendation = summary.recommendation
    if recommendation.get("action") is not None:
        lines.append("")
        lines.append(
            _("Recommendation: {action} (for {tpm} TPM with {headroom} headroom)").format(
                action=action_text(recommendation),
                tpm=format_number(recommendation["target_tpm"]),
                headroom=format_percent(recommendation["headroom"], 0),
            )
        )
    for note in summary.note_texts():
        lines.append(_("Note: {note}").format(note=note))
    return "\n".join(lines)
