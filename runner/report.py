"""report.md (a person reads it in a minute) and the final rich table on the console."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from runner.checks import summary_lines


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def row_description(row: str, manifest: dict[str, Any]) -> str:
    if row == "baseline":
        return f"TF-IDF+LR on the {manifest['data']['train']} train lines"
    if row == "baseline_all_data":
        return f"TF-IDF+LR on all {manifest['data'].get('baseline_all_data_train', '?')} labelled non-eval lines"
    evaluation = manifest["spec"]["evaluation"]
    model = manifest["spec"]["provider"]["model"]
    if row.startswith("fine_tuned"):
        model = (manifest.get("fine_tune") or {}).get("fine_tuned_model") or "fine-tuned model"
    how = evaluation["method"]
    if evaluation["method"] == "score":
        how += " · raw" if row.endswith("_uncalibrated") else f" · {evaluation['calibration']}-calibrated"
    return f"{model} · {how}"


def verdict(metrics: dict[str, dict[str, Any]]) -> str | None:
    """One plain sentence: does the best LLM row beat the best classical baseline?"""
    baselines = {row: m["accuracy"] for row, m in metrics.items() if row.startswith("baseline")}
    llms = {row: m["accuracy"] for row, m in metrics.items() if not row.startswith("baseline")}
    if not baselines or not llms:
        return None
    llm, base = max(llms, key=llms.get), max(baselines, key=baselines.get)
    if llms[llm] > baselines[base]:
        return (
            f"The best LLM row, {llm} ({_pct(llms[llm])}), beats the best TF-IDF baseline, {base} "
            f"({_pct(baselines[base])}), by {100 * (llms[llm] - baselines[base]):.1f} points."
        )
    return (
        f"**The LLM does not beat the classical baseline on this eval split: its best row, {llm}, "
        f"gets {_pct(llms[llm])} against {_pct(baselines[base])} for {base}.** Prefer the baseline, or "
        "improve the LLM (fine-tuning on more lines, calibration) before relying on it."
    )


def results_table(metrics: dict[str, dict[str, Any]], manifest: dict[str, Any]) -> Table:
    table = Table(title=f"{manifest['name']}: {manifest['data']['eval']} eval examples")
    for column in ("row", "what", "accuracy", "macro-F1", "invalid"):
        table.add_column(column, justify="right" if column in ("accuracy", "macro-F1", "invalid") else "left")
    for row, found in metrics.items():
        table.add_row(
            row,
            row_description(row, manifest),
            _pct(found["accuracy"]),
            _pct(found["macro_f1"]),
            str(found["invalid"]),
        )
    return table


def render_report(
    manifest: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    gates: list[dict[str, Any]],
    checks: dict[str, Any] | None,
    label_names: dict[str, str],
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
        lines += [
            f"## Results ({data['eval']} eval examples)",
            "",
            "| row | what | accuracy | macro-F1 | invalid |",
        ]
        lines.append("|---|---|---:|---:|---:|")
        for row, found in metrics.items():
            lines.append(
                f"| {row} | {row_description(row, manifest)} | {_pct(found['accuracy'])} | "
                f"{_pct(found['macro_f1'])} | {found['invalid']} |"
            )
        sentence = verdict(metrics)
        lines += ["", sentence or "", ""]
    if gates:
        lines += ["## Gates", ""]
        for gate in gates:
            lines.append(
                f"- `{gate['gate']}`: {gate['left']:.4f} vs {gate['right']:.4f} → {'pass' if gate['passed'] else '**FAIL**'}"
            )
        lines.append("")
    splits = spec["splits"]
    lines += [
        "## Data",
        "",
        f"- {data['path']}: {data['rows']} rows, {data['excluded']} excluded ({', '.join(spec['data']['exclude_labels']) or 'none'})",
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
        for mode, usage in manifest["usage"].items():
            cost = f"${usage['estimated_usd']:.4f}" if usage["estimated_usd"] is not None else "unknown"
            lines.append(
                f"| {mode} | {usage['requests']} | {usage['from_cache']} | {usage['prompt_tokens']} | "
                f"{usage['completion_tokens']} | {cost} |"
            )
        lines.append("")
    if checks:
        lines += ["## Fine-tuning data checks", "", *[f"- {line}" for line in summary_lines(checks)], ""]
    if primary in metrics:
        lines += _per_class(metrics[primary], label_names, primary)
    lines += [
        "## Files",
        "",
        "spec.yaml (resolved) · manifest.json · train.jsonl · checks.json · predictions.jsonl · metrics.json",
        "",
    ]
    return "\n".join(lines)


def _split_text(split: dict[str, Any]) -> str:
    text = split["take"] + (f" {split['n']}" if "n" in split else "")
    return text + (f", seed {split['seed']}" if split["take"] in ("random", "stratified") else "")


def _per_class(found: dict[str, Any], label_names: dict[str, str], row: str) -> list[str]:
    lines = [
        f"## Per class ({row})",
        "",
        "| label | name | precision | recall | F1 | support |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, scores in found["per_class"].items():
        lines.append(
            f"| {label} | {label_names.get(label, label)} | {scores['precision']:.2f} | {scores['recall']:.2f} | "
            f"{scores['f1']:.2f} | {scores['support']} |"
        )
    confusion = found["confusion"]
    short = [label_names.get(label, label) for label in confusion["labels"]]
    lines += ["", f"Confusion matrix ({row}; rows gold, columns predicted):", ""]
    lines += ["| gold \\ predicted | " + " | ".join(short) + " |", "|---" * (len(short) + 1) + "|"]
    for name, counts in zip(short, confusion["matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(c) if c else "·" for c in counts) + " |")
    return [*lines, ""]
