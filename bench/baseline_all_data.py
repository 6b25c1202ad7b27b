"""The classical baseline when it may train on every labelled TNEWS line outside the eval split.

Run by hand:  .venv/bin/python -m bench.baseline_all_data [tnews|tnews_full]
The spec's own baseline row trains on the spec's train split (the seed's 100 lines); this is
the stronger rival an LLM has to beat to be worth its cost.
"""

from __future__ import annotations

import sys

from runner import PROJECT_ROOT
from runner.config.spec import load_spec
from runner.data.dataset import make_splits
from runner.tasks.classification.baseline import baseline_predictions
from runner.tasks.classification.metrics import classification_metrics


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "tnews"
    spec = load_spec(PROJECT_ROOT / "specs" / f"{name}.yaml")
    splits = make_splits(spec)
    train = splits.outside_eval()
    predicted = baseline_predictions(train, splits.eval)
    found = classification_metrics([e.gold for e in splits.eval], predicted, list(spec.doc["labels"]))
    print(
        f"TF-IDF + LR on {len(train)} lines, {len(splits.eval)} eval lines: "
        f"accuracy {100 * found['accuracy']:.1f}%, macro-F1 {100 * found['macro_f1']:.1f}%"
    )


if __name__ == "__main__":
    main()
