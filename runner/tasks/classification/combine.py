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
ENSEMBLE_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))  # 0 = the baseline alone, 1 = the LLM alone


@dataclass(frozen=True)
class Calibration:
    method: str  # none | mean | bias
    bias: tuple[float, ...] = ()

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
) -> tuple[Calibration, dict[str, float]]:
    """The candidate with the best validation accuracy (ties: the simpler one), and every candidate's accuracy.

    The bias is scored on the same lines it was fitted on, which flatters it a little; with 14
    parameters against hundreds of lines the optimism is small, and mean and none fit nothing.
    """
    candidates = {
        "none": lambda: Calibration("none"),
        "mean": lambda: Calibration("mean"),
        "bias": lambda: Calibration("bias", tuple(float(b) for b in fit_bias(scores, gold))),
    }
    fitted = {name: candidates[name]() for name in among}
    found = {name: round(accuracy(calibration.apply(scores), gold), 4) for name, calibration in fitted.items()}
    best = max(among, key=lambda name: (found[name], -CALIBRATIONS.index(name)))
    return fitted[best], found


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ensemble_scores(llm: np.ndarray, baseline_proba: np.ndarray, weight: float) -> np.ndarray:
    return weight * log_softmax(llm) + (1 - weight) * np.log(np.clip(baseline_proba, 1e-9, 1.0))


def choose_weight(llm: np.ndarray, baseline_proba: np.ndarray, gold: np.ndarray) -> tuple[float, dict[str, float]]:
    """The LLM's weight with the best validation accuracy (ties: the one nearest 0.5)."""
    found = {w: accuracy(ensemble_scores(llm, baseline_proba, w), gold) for w in ENSEMBLE_WEIGHTS}
    best = max(ENSEMBLE_WEIGHTS, key=lambda w: (found[w], -abs(w - 0.5)))
    return best, {str(w): round(a, 4) for w, a in found.items()}
