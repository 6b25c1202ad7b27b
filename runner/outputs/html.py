"""report.html: one self-contained page a person opens from the run folder, offline.

Everything is in the file: CSS inline, figures as inline SVG, no script, no font, no image fetched.
Jinja2 (already a dependency) renders it with autoescaping on, so every label, text and answer from
the data is escaped; only the SVG that plots.py drew (its text escaped by matplotlib) is marked safe.
A figure that fails to draw becomes a note on the page: the page, and the run, are never lost to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

import runner.outputs.plots as plots  # a module, so a test can make one figure fail
from runner.outputs.evidence import LossCurve, MistakeSet
from runner.outputs.summary import gate_detail
from runner.providers.registry import capability


@dataclass
class Figure:
    title: str
    svg: Markup | None = None
    note: str | None = None  # why there is no figure


@dataclass
class Page:
    """What the page shows besides summary.json's contents."""

    metric_names: list[str]
    names: dict[str, str]  # class or type -> the name the model sees
    breakdown_title: str = "Per item"  # the task's words for summary.json's breakdown (Task.breakdown_*)
    breakdown_column: str = "item"
    breakdown_chart: str | None = None  # axis label of a bar chart of it, when there is no confusion matrix
    breakdown_nothing: str = "Nothing found"  # said instead of a chart whose bars would all be 0
    confusion: dict[str, Any] | None = None
    curve: LossCurve = field(default_factory=LossCurve)
    mistakes: list[MistakeSet] = field(default_factory=list)
    checks: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # what could not be read or drawn


def draw(title: str, make: Any, *args: Any) -> Figure:
    """A figure, or a note saying why it could not be drawn (a plotting failure never loses the page)."""
    try:
        return Figure(title, svg=Markup(make(*args)))
    except Exception as error:
        return Figure(title, note=f"figure not drawn: {type(error).__name__}: {error}")


def pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def interval(pair: Any) -> str:
    if not pair or any(x is None for x in pair):
        return ""
    return f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def usd(value: Any) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def figures(summary: dict[str, Any], page: Page) -> list[Figure]:
    found = []
    breakdown = summary.get("breakdown")
    if page.confusion:
        found.append(draw("Confusion matrix", plots.confusion_heatmap, page.confusion, summary["primary_row"]))
    elif breakdown and page.breakdown_chart and not any_score(breakdown["items"]):
        found.append(Figure("", note=f"{page.breakdown_nothing}: every precision, recall and F1 is 0."))
    elif breakdown and page.breakdown_chart:
        found.append(
            draw(page.breakdown_title, plots.score_bars, breakdown["items"], breakdown["row"], page.breakdown_chart)
        )
    return found


def any_score(items: dict[str, dict[str, Any]]) -> bool:
    """Whether a bar chart of these items would draw a bar: an all-zero chart is an empty frame."""
    return any(scores.get(key) for scores in items.values() for key in ("precision", "recall", "f1"))


def render_html(summary: dict[str, Any], page: Page) -> str:
    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(pct=pct, interval=interval, number=number, usd=usd, gate_detail=gate_detail)
    template = environment.from_string(TEMPLATE)
    loss = draw("Fine-tuning loss", plots.loss_plot, page.curve) if page.curve else None
    best = {
        metric: max((r["metrics"].get(metric) or 0.0) for r in summary["rows"])
        for metric in page.metric_names
        if summary["rows"]
    }
    return template.render(
        s=summary,
        page=page,
        figures=figures(summary, page),
        loss=loss,
        best=best,
        lower_is_better={"invalid_rate", "hallucination_rate"},
        free=not capability(summary["provider"], "bills_usage", True),  # tokens counted, nothing bought
    )


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{{ s.name }} · {{ s.run_id }} · specrun</title>
<style>
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --soft:#f9fafb; --ok:#15803d; --bad:#b91c1c; --warn:#b45309; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; background:#f3f4f6; color:var(--ink); font:14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif; }
main { max-width:1100px; margin:0 auto; padding:24px 20px 48px; }
header { background:#111827; color:#f9fafb; padding:22px 24px; border-radius:10px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:650; }
header .desc { color:#d1d5db; margin:4px 0 10px; }
header .meta { color:#9ca3af; font-size:12.5px; }
header .meta span { margin-right:14px; display:inline-block; }
.badge { display:inline-block; padding:2px 10px; border-radius:999px; font-size:12px; font-weight:650; letter-spacing:.02em; margin-right:6px; vertical-align:middle; }
.ok { background:#dcfce7; color:var(--ok); } .bad { background:#fee2e2; color:var(--bad); } .warn { background:#fef3c7; color:var(--warn); } .none { background:#e5e7eb; color:#374151; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px; margin-top:18px; }
h2 { font-size:16px; margin:0 0 12px; }
h3 { font-size:14px; margin:16px 0 8px; color:#374151; }
p.note, .muted { color:var(--muted); font-size:12.5px; }
.verdict { border-left:4px solid var(--accent); background:#eff6ff; padding:10px 14px; border-radius:6px; margin:0 0 14px; }
.verdict.lose { border-color:var(--warn); background:#fffbeb; }
.error { border-left:4px solid var(--bad); background:#fef2f2; padding:10px 14px; border-radius:6px; white-space:pre-wrap; word-break:break-word; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { font-size:12px; text-transform:uppercase; letter-spacing:.03em; color:var(--muted); font-weight:600; background:var(--soft); }
th.num { text-align:right; }
td.num { text-align:right; white-space:nowrap; }
.scroll { overflow-x:auto; max-width:100%; }
td .ci { display:block; color:var(--muted); font-size:11px; }
tr.primary td:first-child { box-shadow: inset 3px 0 0 var(--accent); font-weight:650; }
tr.baseline td { background:#fafaf9; }
td.best { font-weight:700; }
code { background:#f3f4f6; padding:1px 5px; border-radius:4px; font-size:12.5px; }
.figure { text-align:center; margin:6px 0 14px; overflow-x:auto; }
.figure svg { max-width:100%; height:auto; }
.grid { display:grid; grid-template-columns:repeat(auto-fit, minmax(180px, 1fr)); gap:10px; }
.stat { background:var(--soft); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.stat b { display:block; font-size:18px; }
.stat small { color:var(--muted); }
td.text { max-width:520px; word-break:break-word; }
td.what { min-width:140px; }
.bar { display:inline-block; height:8px; background:var(--bad); border-radius:4px; vertical-align:middle; margin-right:6px; }
ul.files { columns:3; margin:0; padding-left:18px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:18px; }
@media (max-width:600px) { main { padding:12px 8px 32px; } section { padding:14px 12px; } ul.files { columns:1; } td.what { min-width:0; } }
</style>
</head>
<body>
<main>
<header>
  <h1>{{ s.name }} <span style="font-weight:400;color:#9ca3af">· run {{ s.run_id }}</span></h1>
  {% if s.description %}<div class="desc">{{ s.description }}</div>{% endif %}
  <div style="margin:8px 0 10px">
    <span class="badge {{ 'ok' if s.status == 'succeeded' else 'bad' if s.status == 'failed' else 'warn' }}">{{ s.status }}</span>
    {% if s.gates_passed is none %}<span class="badge none">no gates evaluated</span>
    {% elif s.gates_passed %}<span class="badge ok">gates pass</span>
    {% else %}<span class="badge bad">gates FAIL</span>{% endif %}
  </div>
  <div class="meta">
    <span>task {{ s.task }}</span><span>{{ s.provider }} · {{ s.model }}</span><span>method {{ s.method }}</span>
    <span>{{ s.eval_size }} eval examples{% if s.limit %} (--limit {{ s.limit }}){% endif %}</span>
    <span>wall time {{ s.timings.wall_seconds | number(1) }} s</span>
    <span>commit {{ s.git_commit or '–' }}</span><span>spec hash {{ s.spec_hash[:12] }}</span>
    <span>started {{ s.timings.started or '–' }}</span>
  </div>
</header>

{% if s.error %}
<section><h2>Why the run stopped</h2><div class="error">{{ s.error }}</div>
<p class="note">Run the same command again: an interrupted run resumes from what this folder holds; a failed one starts a new folder (answers already bought come from the response cache).</p></section>
{% endif %}

<section>
<h2>Results{% if s.rows %} · {{ s.eval_size }} eval examples{% endif %}</h2>
{% if s.verdict %}<p class="verdict{{ ' lose' if 'does not beat' in s.verdict else '' }}">{{ s.verdict }}</p>{% endif %}
{% if s.headline %}<p class="note">{{ s.headline.rule }}</p>{% endif %}
{% if s.rows %}
<div class="scroll"><table>
<thead><tr><th>row</th><th>what</th>{% for m in page.metric_names %}<th class="num">{{ m.replace('_', ' ') }}</th>{% endfor %}</tr></thead>
<tbody>
{% for r in s.rows %}
<tr class="{{ 'primary' if r.name == s.primary_row else '' }} {{ 'baseline' if r.name.startswith('baseline') else '' }}">
  <td>{{ r.name }}</td><td class="muted what">{{ r.description }}</td>
  {% for m in page.metric_names %}
  {% set v = r.metrics.get(m) %}
  <td class="num{{ ' best' if v is not none and m not in lower_is_better and v == best[m] and s.rows | length > 1 else '' }}">{{ v | pct }}{% if r.ci95.get(m) %}<span class="ci">{{ r.ci95[m] | interval }}</span>{% endif %}</td>
  {% endfor %}
</tr>
{% endfor %}
</tbody>
</table></div>
<p class="note">Primary row marked in blue ({{ s.primary_row }}); bold: the best figure in each column{% if s.rows | selectattr('ci95') | list %}; under each figure its 95% bootstrap interval{% endif %}.</p>
{% else %}
<p class="note">No results: the run stopped before evaluation finished.</p>
{% endif %}
</section>

{% if s.gates or s.gates_declared %}
<section>
<h2>Gates</h2>
{% if s.gates %}
<div class="scroll"><table>
<thead><tr><th>gate</th><th class="num">left</th><th class="num">right</th><th>result</th><th>detail</th></tr></thead>
<tbody>
{% for g in s.gates %}
<tr><td><code>{{ g.gate }}</code></td><td class="num">{{ g.left | number }}</td><td class="num">{{ g.right | number }}</td>
<td><span class="badge {{ 'ok' if g.passed else 'bad' }}">{{ 'pass' if g.passed else 'FAIL' }}</span></td>
<td class="muted">{{ g | gate_detail }}</td></tr>
{% endfor %}
</tbody>
</table></div>
{% else %}
<p class="note">Not evaluated (the run {{ s.status }}): {% for g in s.gates_declared %}<code>{{ g }}</code>{{ ', ' if not loop.last }}{% endfor %}</p>
{% endif %}
</section>
{% endif %}

{% if s.breakdown %}
<section>
<h2>{{ page.breakdown_title }} · {{ s.breakdown.row }}</h2>
{% for f in figures %}
<div class="figure">{% if f.svg %}{{ f.svg }}{% else %}<p class="note">{% if f.title %}{{ f.title }}: {% endif %}{{ f.note }}</p>{% endif %}</div>
{% endfor %}
<div class="scroll"><table>
<thead><tr><th>#</th><th>{{ page.breakdown_column }}</th><th>name</th><th class="num">precision</th><th class="num">recall</th><th class="num">F1</th><th class="num">support</th></tr></thead>
<tbody>
{% for name, m in s.breakdown['items'].items() %}
<tr><td class="muted">{{ loop.index }}</td><td>{{ name }}</td><td>{{ page.names.get(name, '') }}</td>
<td class="num">{{ m.precision | number(2) }}</td><td class="num">{{ m.recall | number(2) }}</td><td class="num">{{ m.f1 | number(2) }}</td><td class="num">{{ m.support }}</td></tr>
{% endfor %}
</tbody>
</table></div>
</section>
{% endif %}

{% for set in page.mistakes %}
<section>
<h2>Mistakes · {{ set.row }} <span class="muted">({{ set.total }} of {{ s.eval_size }} wrong)</span></h2>
<p class="note">{% if set.shown | length < set.total %}Showing {{ set.shown | length }} of {{ set.total }}{% else %}Shown: all {{ set.total }}{% endif %}, {{ set.how }}.</p>
{% if set.shown %}
<div class="scroll"><table>
<thead><tr><th>text</th><th>gold</th><th>predicted</th>{% if set.shown[0].confidence is not none %}<th class="num">p(predicted)</th><th class="num">p(gold)</th>{% endif %}</tr></thead>
<tbody>
{% for m in set.shown %}
<tr><td class="text">{{ m.text }}{% if m.answer %}<span class="ci">answer: {{ m.answer | truncate(200) }}</span>{% endif %}</td><td>{{ m.gold }}</td><td>{{ m.predicted }}</td>
{% if set.shown[0].confidence is not none %}<td class="num"><span class="bar" style="width:{{ ((m.confidence or 0) * 50) | round(0) | int }}px"></span>{{ m.confidence | pct }}</td><td class="num">{{ m.gold_probability | pct }}</td>{% endif %}</tr>
{% endfor %}
</tbody>
</table></div>
{% else %}<p class="note">None: every answer of this row is right.</p>{% endif %}
</section>
{% endfor %}

{% if s.fine_tune %}
<section>
<h2>Fine-tuning</h2>
<div class="grid">
  <div class="stat"><small>job</small><b>{{ s.fine_tune.job_id or '–' }}</b><small>{{ s.fine_tune.status or '' }}</small></div>
  <div class="stat"><small>base model</small><b>{{ s.fine_tune.base_model or '–' }}</b></div>
  <div class="stat"><small>result</small><b>{{ s.fine_tune.fine_tuned_model or '–' }}</b></div>
  <div class="stat"><small>last train / validation loss</small><b>{{ s.fine_tune.final_train_loss | number }} / {{ s.fine_tune.final_valid_loss | number }}</b><small>{{ s.fine_tune.trained_tokens | number }} trained tokens</small></div>
</div>
{% if loss %}<div class="figure">{% if loss.svg %}{{ loss.svg }}{% else %}<p class="note">{{ loss.title }}: {{ loss.note }}</p>{% endif %}</div>
{% else %}<p class="note">No losses recorded in finetune_events.jsonl or finetune.json.</p>{% endif %}
</section>
{% endif %}

<section>
<h2>Cost and tokens</h2>
<div class="grid">
  <div class="stat"><small>evaluation cost</small><b>{{ '$0 (local model)' if free else s.cost.eval_usd | usd if s.usage else '$0 (no API calls)' }}</b></div>
  {% if s.usage %}<div class="stat"><small>prompt / completion tokens</small><b>{{ s.cost.prompt_tokens | number }} / {{ s.cost.completion_tokens | number }}</b></div>{% endif %}
  {% if s.cost.training_billed_tokens is not none %}
  <div class="stat"><small>training tokens billed (estimate)</small><b>{{ s.cost.training_billed_tokens | number }}</b></div>
  <div class="stat"><small>training cost{% if page.checks %} on {{ page.checks.model }}{% endif %} (estimate)</small><b>{{ s.cost.training_usd_estimate | usd }}</b>{% if s.cost.prices_as_of %}<small>prices as of {{ s.cost.prices_as_of }}</small>{% endif %}</div>
  {% endif %}
</div>
{% if s.usage %}
<h3>API usage by mode</h3>
<div class="scroll"><table>
<thead><tr><th>mode</th><th class="num">requests</th><th class="num">from cache</th><th class="num">prompt tokens</th><th class="num">completion tokens</th><th class="num">est. cost</th></tr></thead>
<tbody>
{% for mode, u in s.usage.items() %}
<tr><td>{{ mode }}</td><td class="num">{{ u.requests | number }}</td><td class="num">{{ u.from_cache | number }}</td><td class="num">{{ u.prompt_tokens | number }}</td><td class="num">{{ u.completion_tokens | number }}</td><td class="num">{{ '$0 (local model)' if free else u.estimated_usd | usd }}</td></tr>
{% endfor %}
</tbody>
</table></div>
{% endif %}
{% if page.checks %}
<h3>Fine-tuning data checks</h3>
<p class="muted">{{ page.checks.n_valid }}/{{ page.checks.n_examples }} examples well-formed ({{ page.checks.encoding }}, {{ page.checks.model }}); {{ page.checks.n_epochs }} epochs × {{ page.checks.billed_tokens_per_epoch | number }} billed tokens; {{ page.checks.n_over_limit }} over the {{ page.checks.max_training_tokens | number }}-token limit.</p>
{% endif %}
</section>

<section>
<h2>Data and timings</h2>
<div class="grid">
  <div class="stat"><small>rows read</small><b>{{ s.data.rows | number }}</b><small>{{ s.data.excluded }} excluded</small></div>
  <div class="stat"><small>train / validation / eval</small><b>{{ s.data.train }} / {{ s.data.validation }} / {{ s.data.eval }}</b></div>
  {% if s.data.baseline_all_data_train %}<div class="stat"><small>baseline_all_data trained on</small><b>{{ s.data.baseline_all_data_train | number }}</b></div>{% endif %}
  {% for stage, seconds in s.timings.stage_seconds.items() %}<div class="stat"><small>{{ stage }}</small><b>{{ seconds }} s</b></div>{% endfor %}
</div>
<p class="muted">Data: {{ s.data.path }}</p>
</section>

{% if page.notes %}
<section><h2>Notes</h2><ul>{% for n in page.notes %}<li class="muted">{{ n }}</li>{% endfor %}</ul></section>
{% endif %}

<section>
<h2>Files in this run folder</h2>
<ul class="files">{% for f in s.files %}<li><code>{{ f }}</code></li>{% endfor %}</ul>
</section>
<footer>specrun · summary.json schema v{{ s.schema_version }} · this page is self-contained and works offline</footer>
</main>
</body>
</html>
"""
