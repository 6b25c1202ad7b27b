"""What a validation split buys label scoring: calibration chosen per mode, and an ensemble row.

Both are fitted on the validation split only and applied unchanged to the eval split, so the eval
figures stay honest. Calibration candidates:
- none: the raw label log-probabilities;
- mean: subtract each label's mean score over the lines being scored (transductive, no fitting);
- bias: add a per-label bias fitted on the validation split (softmax cross-entropy, L2-damped).
The ensemble adds the LLM's calibrated label log-probabilities, weighted by w, to the classical
baseline's log class-probabilities weighted by 1 − w; w is chosen on the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CALIBRATIONS = ("none", "mean", "bias")
ENSEMBLE_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # never 0: the row always uses the LLM
MIN_LINES_PER_LABEL = 2  # with fewer validation lines a fitted bias memorises them (one line: +7 nats on its label)
FOLDS = 5  # the bias candidate is scored on lines it was not fitted on


@dataclass(frozen=True)
class Calibration:
    method: str  # none | mean | bias
    bias: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in CALIBRATIONS or (self.method == "bias") != bool(self.bias):
            raise ValueError(f"calibration {self.method!r} with {len(self.bias)} bias values")

    def apply(self, scores: np.ndarray) -> np.ndarray:
        if self.method == "mean":
            return scores - scores.mean(axis=0, keepdims=True)
        if self.method == "bias":
            return scores + np.asarray(self.bias, dtype=scores.dtype)
        return scores


def fit_bias(scores: np.ndarray, gold: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """The per-label bias b minimising the cross-entropy of softmax(scores + b) on `gold`.

    Convex in b; L-BFGS (torch) converges in a few dozen iterations for 14 labels.
    """
    logits = torch.tensor(scores, dtype=torch.float64)
    targets = torch.tensor(gold)
    bias = torch.zeros(scores.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([bias], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(logits + bias, targets) + l2 * (bias**2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return (bias - bias.mean()).detach().numpy()


def accuracy(scores: np.ndarray, gold: np.ndarray) -> float:
    return float((scores.argmax(axis=1) == gold).mean())


def choose_calibration(
    scores: np.ndarray, gold: np.ndarray, among: tuple[str, ...] = CALIBRATIONS
) -> tuple[Calibration, dict[str, float], str | None]:
    """The candidate with the best validation accuracy (ties: the simpler one), every candidate's
    accuracy, and why `bias` was left out when it was.

    The bias is judged by its accuracy on held-out folds of the validation split (each fold
    scored by a bias fitted on the others), then fitted once more on all of it.
    """
    why = None
    if "bias" in among and len(gold) < MIN_LINES_PER_LABEL * scores.shape[1]:
        why = f"{len(gold)} validation lines is fewer than {MIN_LINES_PER_LABEL} per label: too few to fit a bias on"
        among = tuple(name for name in among if name != "bias") or ("mean",)
    found = {}
    for name in among:
        if name == "bias":
            found[name] = round(_held_out_bias_accuracy(scores, gold), 4)
        else:
            found[name] = round(accuracy(Calibration(name).apply(scores), gold), 4)
    best = max(among, key=lambda name: (found[name], -CALIBRATIONS.index(name)))
    chosen = (
        Calibration("bias", tuple(float(b) for b in fit_bias(scores, gold))) if best == "bias" else Calibration(best)
    )
    return chosen, found, why


def _held_out_bias_accuracy(scores: np.ndarray, gold: np.ndarray) -> float:
    folds = np.arange(len(gold)) % FOLDS
    right = 0
    for fold in range(FOLDS):
        held = folds == fold
        bias = fit_bias(scores[~held], gold[~held])
        right += int(((scores[held] + bias).argmax(axis=1) == gold[held]).sum())
    return right / len(gold)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ensemble_scores(llm: np.ndarray, baseline_proba: np.ndarray, weight: float) -> np.ndarray:
    return weight * log_softmax(llm) + (1 - weight) * np.log(np.clip(baseline_proba, 1e-9, 1.0))


def choose_weight(llm: np.ndarray, baseline_proba: np.ndarray, gold: np.ndarray) -> tuple[float, dict[str, float]]:
    """The LLM's weight with the best validation accuracy (ties: the one nearest 0.5); at least 0.05,
    so the row always says something about the LLM."""
    found = {w: accuracy(ensemble_scores(llm, baseline_proba, w), gold) for w in ENSEMBLE_WEIGHTS}
    best = max(ENSEMBLE_WEIGHTS, key=lambda w: (found[w], -abs(w - 0.5)))
    return best, {str(w): round(a, 4) for w, a in found.items()}
