"""report.md (a person reads it in a minute) and the final rich table on the console."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from runner.data.chat_checks import summary_lines
from runner.providers.registry import capability
from runner.tasks import Task, pct
from runner.tasks.common import model_of


def describe_gate(gate: dict[str, Any]) -> str:
    """The values, the difference and its interval, and how sure the verdict is (console and report.md)."""
    text = f"{gate['left']:.4f} vs {gate['right']:.4f}"
    bounds = gate.get("difference_ci95")
    if bounds:
        interval = f"95% interval {bounds[0]:+.4f} to {bounds[1]:+.4f}"
        if gate.get("within_noise"):
            text += f"; passed, but the difference ({gate['difference']:+.4f}) is inside the noise ({interval})"
        else:
            text += f"; difference {gate['difference']:+.4f} ({interval})"
    if gate.get("confidence") is not None:
        text += f"; {'holds' if gate['passed'] else 'does not hold'} at {100 * gate['confidence']:g}% confidence"
    if gate.get("note"):
        text += f"; {gate['note']}"
    return text


def row_description(row: str, manifest: dict[str, Any], task: Task) -> str:
    """What produced a row: the baselines here, the task's own rows by the task, else model · method."""
    if row == "baseline":
        return f"{task.baseline_name} on the {manifest['data']['train']} train lines"
    if row == "baseline_all_data":
        return f"{task.baseline_name} on all {manifest['data'].get('baseline_all_data_train', '?')} labelled non-eval lines"
    described = task.row_description(row, manifest)
    if described is not None:
        return described
    return f"{model_of(row, manifest)} · {manifest['spec']['evaluation']['method']}"


@dataclass
class Headline:
    """How the verdict's LLM row was chosen: the best by the task's primary metric among the rows that
    beat the task's trivial predictor (always the most frequent label; no entity), so a row that never
    reads the text cannot be the headline however unbalanced the eval split is."""

    metric: str
    row: str | None  # None: no LLM row beats the trivial predictor
    trivial: tuple[str, float] | None  # (what it answers, its score); None: the task knows none
    excluded: list[str]  # LLM rows no better than the trivial predictor
    baseline: str
    baseline_score: float
    scores: dict[str, float]

    @property
    def rule(self) -> str:
        """One sentence for the reader: which rule chose the headline row, and what it left out."""
        text = f"Headline row: the LLM row with the best {self.metric}"
        if self.trivial is None:
            return text + "."
        how, score = self.trivial
        text += f" among those that beat {how}, which gets {pct(score)} {self.metric} on this eval split"
        return text + (f"; left out as no better: {', '.join(self.excluded)}." if self.excluded else ".")


def headline(metrics: dict[str, dict[str, Any]], task: Task) -> Headline | None:
    """The verdict's LLM row and best baseline by the primary metric; None without both kinds of row."""
    key = task.primary_metric
    baselines = {row: m[key] for row, m in metrics.items() if row.startswith("baseline")}
    llms = {row: m[key] for row, m in metrics.items() if not row.startswith("baseline")}
    if not baselines or not llms:
        return None
    trivial = next((found for m in metrics.values() if (found := task.trivial(m)) is not None), None)
    floor = trivial[1] if trivial else None
    eligible = {row: score for row, score in llms.items() if floor is None or score > floor + 1e-12}
    base = max(baselines, key=lambda row: baselines[row])
    return Headline(
        metric=key,
        row=max(eligible, key=lambda row: eligible[row]) if eligible else None,
        trivial=trivial,
        excluded=[row for row in llms if row not in eligible],
        baseline=base,
        baseline_score=baselines[base],
        scores=llms,
    )


def verdict(metrics: dict[str, dict[str, Any]], task: Task) -> str | None:
    """One plain sentence: does the best LLM row (that beats the trivial predictor) beat the best classical baseline?"""
    chosen = headline(metrics, task)
    if chosen is None:
        return None
    key, base, base_score = chosen.metric, chosen.baseline, chosen.baseline_score
    if chosen.row is None:
        how, floor = chosen.trivial or ("the trivial predictor", 0.0)
        if base_score > floor:
            return (
                f"**The LLM does not beat the classical baseline on this eval split: no LLM row does better than "
                f"{how}, which gets {pct(floor)} {key}, and {base} ({task.baseline_name}) gets {pct(base_score)}.** "
                "Prefer the baseline, or improve the LLM (fine-tuning on more lines, calibration) before relying on it."
            )
        return f"**On this eval split neither the LLM nor the {task.baseline_name} baseline does better than {how}, which gets {pct(floor)} {key}.**"
    llm, score = chosen.row, chosen.scores[chosen.row]
    how, floor = chosen.trivial or ("", 0.0)
    beside = f" For comparison, {how} gets {pct(floor)} {key}." if how else ""  # the floor beside the figure
    if score > base_score:
        return (
            f"The best LLM row, {llm} ({pct(score)} {key}), beats the best {task.baseline_name} baseline, "
            f"{base} ({pct(base_score)}), by {100 * (score - base_score):.1f} points.{beside}"
        )
    return (
        f"**The LLM does not beat the classical baseline on this eval split: its best row, {llm}, "
        f"gets {key} {pct(score)} against {pct(base_score)} for {base} ({task.baseline_name}).**{beside} "
        "Prefer the baseline, or improve the LLM (fine-tuning on more lines, calibration) before relying on it."
    )


def results_table(metrics: dict[str, dict[str, Any]], manifest: dict[str, Any], task: Task) -> Table:
    table = Table(title=f"{manifest['name']}: {manifest['data']['eval']} eval examples")
    columns = task.table_columns()
    table.add_column("row")
    table.add_column("what")
    for header, _ in columns:
        table.add_column(header, justify="right")
    for row, found in metrics.items():
        table.add_row(row, row_description(row, manifest, task), *(cell(found) for _, cell in columns))
    return table


def render_report(
    manifest: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    gates: list[dict[str, Any]],
    checks: dict[str, Any] | None,
    task: Task,
) -> str:
    spec = manifest["spec"]
    data = manifest["data"]
    primary = spec["evaluation"]["modes"][0]
    passed = all(gate["passed"] for gate in gates)
    lines = [
        f"# {manifest['name']}: run {manifest['run_id']}",
        "",
        spec.get("description") or "",
        "",
        f"Status: **{manifest['status']}** · gates: **{'pass' if passed else 'FAIL'}** · "
        f"wall time {manifest.get('wall_seconds', 0):.0f} s · commit {manifest['environment']['git_commit']} · "
        f"spec hash {manifest['spec_hash'][:12]}",
        "",
    ]
    if metrics:
        columns = task.table_columns()
        lines += [
            f"## Results ({data['eval']} eval examples)",
            "",
            "| row | what | " + " | ".join(header for header, _ in columns) + " |",
            "|---|---|" + "---:|" * len(columns),
        ]
        for row, found in metrics.items():
            cells = " | ".join(cell(found) for _, cell in columns)
            lines.append(f"| {row} | {row_description(row, manifest, task)} | {cells} |")
        sentence, chosen = verdict(metrics, task), headline(metrics, task)
        lines += ["", *_interval_note(manifest, metrics), sentence or "", ""]
        lines += [chosen.rule, ""] if chosen else []
    if gates:
        lines += ["## Gates", ""]
        for gate in gates:
            lines.append(f"- `{gate['gate']}`: {describe_gate(gate)} → {'pass' if gate['passed'] else '**FAIL**'}")
        if manifest.get("against"):
            lines.append(f"- against: run {manifest['against'].get('run_id')} ({manifest['against'].get('path')})")
        lines.append("")
    splits = spec["splits"]
    lines += [
        "## Data",
        "",
        f"- {', '.join(data.get('files') or [data['path']])}: {data['rows']} rows, {data['excluded']} excluded",
        f"- train: {data['train']} ({_split_text(splits['train'])}); eval: {data['eval']} ({_split_text(splits['eval'])}"
        f"{', --limit ' + str(manifest['limit']) if manifest.get('limit') else ''})",
        "",
    ]
    if manifest.get("fine_tune"):
        job = manifest["fine_tune"]
        lines += [
            "## Fine-tuning",
            "",
            f"- job {job['job_id']} on {job['base_model']} (training file {job['training_file']})",
            f"- result: {job['fine_tuned_model']}",
            "",
        ]
    if manifest.get("usage"):
        lines += [
            "## Usage and cost",
            "",
            "| mode | requests | from cache | prompt tokens | completion tokens | est. cost |",
        ]
        lines.append("|---|---:|---:|---:|---:|---:|")
        free = not capability(spec["provider"]["name"], "bills_usage", True)  # tokens counted, nothing bought
        for mode, usage in manifest["usage"].items():
            cost = (
                "$0 (local model)"
                if free
                else f"${usage['estimated_usd']:.4f}"
                if usage["estimated_usd"] is not None
                else "unknown"
            )
            lines.append(
                f"| {mode} | {usage['requests']} | {usage['from_cache']} | {usage['prompt_tokens']} | "
                f"{usage['completion_tokens']} | {cost} |"
            )
        lines.append("")
    if checks:
        lines += ["## Fine-tuning data checks", "", *[f"- {line}" for line in summary_lines(checks)], ""]
    if primary in metrics:
        lines += task.report_section(metrics[primary], primary)
        lines += task.comparison_section(metrics, primary)
    lines += [
        "## Files",
        "",
        "spec.yaml (resolved) · manifest.json · train.jsonl · checks.json · predictions.jsonl · metrics.json · "
        "report.html (this report with figures) · summary.json (schemas/summary.schema.json) · junit.xml (gates)",
        "",
    ]
    return "\n".join(lines)


def _interval_note(manifest: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> list[str]:
    settings = manifest.get("bootstrap")
    if not settings or not any("ci95" in found for found in metrics.values()):
        return []
    return [
        f"In brackets: {100 * settings['confidence']:g}% {settings['method']} bootstrap intervals over the eval examples "
        f"({settings['resamples']} resamples, seed {settings['seed']}).",
        "",
    ]


def _split_text(split: dict[str, Any]) -> str:
    text = split["take"] + (f" {split['n']}" if "n" in split else "")
    text += f", seed {split['seed']}" if split["take"] in ("random", "stratified") else ""
    return text + (f" of {Path(split['path']).name}" if "path" in split else "")
