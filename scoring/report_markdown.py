"""Render the scoring report as Markdown, with the kappa table laid out like the MURA paper's Table 2."""

from __future__ import annotations

import math
from typing import Any

TABLE_METRICS = ("auroc", "kappa", "sensitivity", "specificity", "accuracy")
METRIC_TITLES = {"auroc": "AUROC", "kappa": "Cohen's kappa", "sensitivity": "Sensitivity",
                 "specificity": "Specificity", "accuracy": "Accuracy"}


def _part_title(part: str) -> str:
    """`XR_WRIST` -> `Wrist`; `overall` -> `Overall`."""
    return part.removeprefix("XR_").capitalize()


def format_interval(interval: dict[str, float] | None) -> str:
    """`0.705 (0.700, 0.710)` as the paper writes it; `n/a` where undefined."""
    if not interval or interval.get("value") is None or math.isnan(interval["value"]):
        return "n/a"
    low, high = interval.get("low"), interval.get("high")
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{interval['value']:.3f}"
    return f"{interval['value']:.3f} ({low:.3f}, {high:.3f})"


def _kappa_table(report: dict[str, Any]) -> list[str]:
    paper = report["paper"]
    lines = [
        "| Study type | This run: kappa (95% CI) | MURA paper model | MURA paper best radiologist |",
        "| --- | --- | --- | --- |",
    ]
    for part, values in report["abnormality"].items():
        if part == "overall":
            continue
        lines.append(f"| {_part_title(part)} | {format_interval(values['kappa'])} | – | – |")
    overall = report["abnormality"]["overall"]
    lines.append(
        f"| **Overall** | **{format_interval(overall['kappa'])}** | "
        f"{format_interval(paper['model_kappa'])} | {paper['best_radiologist_kappa']:.3f} |"
    )
    return lines


def _metrics_table(report: dict[str, Any]) -> list[str]:
    header = "| Study type | Studies | Abnormal | " + " | ".join(METRIC_TITLES[name] for name in TABLE_METRICS) + " |"
    lines = [header, "|" + " --- |" * (3 + len(TABLE_METRICS))]
    for part, values in report["abnormality"].items():
        cells = [format_interval(values[name]) for name in TABLE_METRICS]
        title = _part_title(part)
        lines.append(f"| {title} | {values['n_studies']} | {values['n_abnormal']} | " + " | ".join(cells) + " |")
    paper = report["paper"]
    lines.append(
        f"| MURA paper model (overall) | 207 | – | {paper['model_auroc']:.3f} | "
        f"{format_interval(paper['model_kappa'])} | {paper['model_sensitivity']:.3f} | "
        f"{paper['model_specificity']:.3f} | – |"
    )
    return lines


def _routing_section(routing: dict[str, Any]) -> list[str]:
    if not routing["n_studies"]:
        return ["No study has a known body part, so routing accuracy is not reported."]
    classes = routing["classes"]
    lines = [
        f"Routing accuracy over {routing['n_studies']} studies: {format_interval(routing['accuracy'])}.",
        "",
        "Confusion matrix (rows: true body part, columns: routed body part):",
        "",
        "| true \\ routed | " + " | ".join(_part_title(part) for part in classes) + " | accuracy |",
        "|" + " --- |" * (len(classes) + 2),
    ]
    for part, counts in zip(classes, routing["confusion_matrix"], strict=True):
        accuracy = routing["per_part_accuracy"][part]
        accuracy_text = "n/a" if accuracy is None else f"{accuracy:.3f}"
        lines.append(f"| {_part_title(part)} | " + " | ".join(str(count) for count in counts) + f" | {accuracy_text} |")
    return lines


def _number(value: float | None) -> str:
    """A recorded figure to three decimals, `–` when none is recorded."""
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _calibration_section(calibration: dict[str, Any]) -> list[str]:
    if not calibration:
        return ["No labelled study was scored, so calibration is not reported."]
    lines = ["Expected calibration error (ECE, equal-width bins, count-weighted) of the scores in the predictions "
             "file, per expert; the manifest's columns are the ECE its calibration recorded on validation studies "
             "before and after it was fitted (`–` where none is recorded).",
             "",
             "| Expert | Studies | ECE of these scores (95% CI) | Calibration | Manifest ECE before | "
             "Manifest ECE after |",
             "| --- | --- | --- | --- | --- | --- |"]
    for group, values in calibration.items():
        lines.append(f"| {_part_title(group)} | {values['n_studies']} | {format_interval(values['ece'])} | "
                     f"{values['method'] or 'none'} | {_number(values['ece_before'])} | "
                     f"{_number(values['ece_after'])} |")
    return lines


def _triage_section(triage: dict[str, Any]) -> list[str]:
    if not triage:
        return ["No scored study has a triage category: the experts that scored them have no operating points "
                "(python -m training.operating_points REPOSITORY --data FOLDER chooses them)."]
    lines = ["Studies per triage category (all scored studies), and sensitivity and specificity at each operating "
             "point over the labelled ones with a category: positive at rule-out is any category but low, "
             "at rule-in flagged only.",
             "",
             "| Expert | Flagged | Indeterminate | Low | None | Rule-out threshold | Sensitivity | Specificity | "
             "Rule-in threshold | Sensitivity | Specificity |",
             "|" + " --- |" * 11]
    for group, values in triage.items():
        counts = values["counts"]
        cells = [str(counts[name]) for name in ("flagged", "indeterminate", "low", "none")]
        for point in ("rule_out", "rule_in"):
            figures = values[point]
            cells += [_number(figures["threshold"]), format_interval(figures["sensitivity"]),
                      format_interval(figures["specificity"])]
        lines.append(f"| {_part_title(group)} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """Return the whole report as Markdown text."""
    studies, settings = report["studies"], report["settings"]
    lines = [
        "# Scoring report",
        "",
        f"{studies['rows']} studies in the predictions file: {studies['scored']} scored, "
        f"{studies['unscored']} without a readable image (left out of the metrics), "
        f"{studies['labelled_and_scored']} scored with a known label; "
        f"{studies['images_unreadable']} unreadable images in all; "
        f"{studies.get('images_out_of_distribution', 0)} views flagged by the out-of-domain gate, in "
        f"{studies.get('studies_with_out_of_distribution_views', 0)} studies.",
        "",
        f"Intervals are 95% percentile bootstrap intervals over studies ({settings['bootstrap_replicates']} "
        f"resamples, seed {settings['seed']}); `n/a` where a metric is undefined (e.g. AUROC of a set "
        "holding one class). Studies are grouped by " + settings["grouped_by"] + ".",
        "",
        "## Cohen's kappa, laid out like Table 2 of the MURA paper",
        "",
        *_kappa_table(report),
        "",
        "The paper's figures are on its 207-study test set with a majority vote of three radiologists as",
        "gold standard; the public MURA validation set is a different, larger set, so compare with care.",
        "Per-part figures from the paper are not reproduced here.",
        "",
        "## Abnormality metrics per study type",
        "",
        *_metrics_table(report),
        "",
        "## Calibration per expert",
        "",
        *_calibration_section(report.get("calibration", {})),
        "",
        "## Triage at the operating points",
        "",
        *_triage_section(report.get("triage", {})),
        "",
        "## Routing",
        "",
        *_routing_section(report["routing"]),
        "",
    ]
    plots = report.get("plots", {})
    if plots:
        lines += ["## Plots", ""]
        if "roc_curves" in plots:
            lines += [f"![ROC curves]({plots['roc_curves']})", ""]
        if "reliability" in plots:
            lines += [f"![Reliability diagram]({plots['reliability']})", ""]
        if "routing_confusion" in plots:
            lines += [f"![Routing confusion matrix]({plots['routing_confusion']})", ""]
    return "\n".join(lines)
