"""Local fine-tuning mechanics on a tiny randomly initialised gemma built here (fast), and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from runner.cli import main
from runner.providers.local.store import LocalRegistry
from tests.conftest import make_tiny_gemma

pytestmark = pytest.mark.model  # needs the embedded model's tokenizer (converted once, then cached)

ANSWERS = ["科技", "金融"]
TRAIN = [
    [{"role": "user", "content": f"文本：{text}\n类别："}, {"role": "assistant", "content": answer}]
    for text, answer in [("芯片发布", "科技"), ("股市大涨", "金融"), ("手机新品", "科技"), ("银行降息", "金融")]
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    # Large tied embeddings (initializer_range 0.5): a 32-wide model can then move its logits.
    return make_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"), initializer_range=0.5)


@pytest.fixture
def registry(tmp_path, monkeypatch) -> LocalRegistry:
    monkeypatch.setenv("SPECRUN_REGISTRY", str(tmp_path / "registry"))
    return LocalRegistry()


def write_chat(path: Path, conversations) -> Path:
    path.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in conversations), "utf-8")
    return path


def new_job(tiny_model, registry, tmp_path, **settings):
    from runner.providers.local.provider import LocalProvider

    provider = LocalProvider(str(tiny_model), batch_size=4)
    file_id = provider.upload(write_chat(tmp_path / "train.jsonl", TRAIN))
    defaults = {"n_epochs": 10, "batch_size": 2, "learning_rate_multiplier": 100, "seed": 3}
    job = provider.create_job(file_id, {**defaults, **settings})
    return provider, job


def adapter_weights(registry: LocalRegistry, job_id: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(registry.latest_checkpoint(job_id) / "adapter_model.safetensors")


def test_lora_job_learns_and_records_its_lifecycle(tiny_model, registry, tmp_path):
    from rich.console import Console

    provider, job = new_job(tiny_model, registry, tmp_path)
    assert job.status == "queued" and job.fine_tuned_model is None
    provider.drive(job.id, Console(quiet=True))
    done = provider.job(job.id)
    assert done.status == "succeeded"
    checkpoints = provider.checkpoints(job.id)
    assert [c.step for c in checkpoints] == list(range(2, 21, 2))  # one per epoch of 2 steps
    assert checkpoints[-1].metrics["train_loss"] < 0.5 * checkpoints[0].metrics["train_loss"]
    messages = [event.message for event in provider.events(job.id)]
    assert messages[0].startswith("Created job") and messages[-1].startswith("The job has successfully completed")
    assert any("Step 10/20" in m for m in messages)
    assert provider.find_job(done.training_file).id == job.id


def test_lora_layers_trains_only_the_last_layers(tiny_model, registry, tmp_path):
    from rich.console import Console

    from runner.core.errors import InvalidInput

    provider, job = new_job(tiny_model, registry, tmp_path, n_epochs=1, local={"lora_layers": 1})
    provider.drive(job.id, Console(quiet=True))
    layers = {name.split(".layers.")[1].split(".")[0] for name in adapter_weights(registry, job.id)}
    assert layers == {"1"}  # the tiny model has layers 0 and 1
    with pytest.raises(InvalidInput, match=r"fine_tune\.local\.lora_layers: 3 layers asked, but the model has 2"):
        new_job(tiny_model, registry, tmp_path, local={"lora_layers": 3})
    assert len(provider.list_jobs()) == 1  # the bad spec made no job

    from runner.pipeline.fine_tune import create_or_reattach

    file_id = provider.upload(write_chat(tmp_path / "other.jsonl", TRAIN[:2]))
    with pytest.raises(InvalidInput) as caught:  # the pipeline's path: still the spec's error, exit 2
        create_or_reattach(provider, file_id, {"local": {"lora_layers": 3}})
    assert caught.value.exit_code == 2


def test_interrupted_job_resumes_to_the_same_weights(tiny_model, registry, tmp_path, monkeypatch):
    from rich.console import Console

    import runner.providers.local.trainer as training

    provider, straight = new_job(tiny_model, registry, tmp_path)
    provider.drive(straight.id, Console(quiet=True))

    provider, job = new_job(tiny_model, registry, tmp_path)
    calls = {"n": 0}
    real_loss = training.batch_loss

    def dies_on_sixth_step(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(training, "batch_loss", dies_on_sixth_step)
    with pytest.raises(KeyboardInterrupt):
        provider.drive(job.id, Console(quiet=True))
    record = registry.record(job.id)
    assert record["status"] == "interrupted" and record["step"] == 5
    assert provider.job(job.id).fine_tuned_model == record["model_id"]  # usable at once
    monkeypatch.setattr(training, "batch_loss", real_loss)

    from runner.providers.local.provider import LocalProvider

    LocalProvider(str(tiny_model)).drive(job.id, Console(quiet=True))  # a fresh process would do this
    assert registry.record(job.id)["status"] == "succeeded"
    resumed, uninterrupted = adapter_weights(registry, job.id), adapter_weights(registry, straight.id)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.allclose(resumed[name], uninterrupted[name], atol=1e-4), name


def test_ctrl_c_checkpoints_at_once_without_scoring_validation(tiny_model, registry, tmp_path, monkeypatch):
    """The checkpoint Ctrl-C writes skips the validation pass (500 TNEWS lines: ~40 s on the CPU)."""
    from rich.console import Console

    import runner.providers.local.trainer as training
    from runner.providers.local.provider import LocalProvider

    provider = LocalProvider(str(tiny_model))
    train_id = provider.upload(write_chat(tmp_path / "train.jsonl", TRAIN))
    valid_id = provider.upload(write_chat(tmp_path / "valid.jsonl", TRAIN[:2]))
    job = provider.create_job(train_id, {"n_epochs": 2, "batch_size": 1, "validation_file": valid_id})
    steps = {"n": 0}
    real_loss = training.batch_loss

    def dies_on_sixth_step(lm, *args):
        steps["n"] += lm.training  # validation runs in eval mode
        if steps["n"] == 6:
            raise KeyboardInterrupt
        return real_loss(lm, *args)

    monkeypatch.setattr(training, "batch_loss", dies_on_sixth_step)
    with pytest.raises(KeyboardInterrupt):
        provider.drive(job.id, Console(quiet=True))
    epoch_end, interrupted = provider.checkpoints(job.id)
    assert (epoch_end.step, interrupted.step) == (4, 5)
    assert "valid_loss" in epoch_end.metrics and set(interrupted.metrics) == {"step", "train_loss"}


def test_validation_metrics_and_loading_the_result(tiny_model, registry, tmp_path):
    from rich.console import Console

    from runner.providers.local.provider import LocalProvider

    provider = LocalProvider(str(tiny_model))
    train_id = provider.upload(write_chat(tmp_path / "train.jsonl", TRAIN))
    valid_id = provider.upload(write_chat(tmp_path / "valid.jsonl", TRAIN[:2]))
    job = provider.create_job(train_id, {"n_epochs": 2, "batch_size": 4, "validation_file": valid_id})
    provider.drive(job.id, Console(quiet=True))
    metrics = provider.checkpoints(job.id)[-1].metrics
    assert set(metrics) == {"step", "train_loss", "valid_loss", "valid_accuracy"}
    assert 0.0 <= metrics["valid_accuracy"] <= 1.0

    model_id = provider.job(job.id).fine_tuned_model
    tuned = LocalProvider(model_id)
    assert tuned.describe()["fine_tuned_from"] == str(tiny_model)
    scores = tuned.score([TRAIN[0][:1]], ANSWERS)
    assert scores.shape == (1, 2) and np.isfinite(scores).all()


def test_full_fine_tuning_saves_and_loads_weights(tiny_model, registry, tmp_path):
    from rich.console import Console

    from runner.providers.local.provider import LocalProvider

    provider, job = new_job(tiny_model, registry, tmp_path, n_epochs=1, local={"method": "full"})
    provider.drive(job.id, Console(quiet=True))
    assert (registry.latest_checkpoint(job.id) / "model.safetensors").is_file()
    before = LocalProvider(str(tiny_model)).score([TRAIN[0][:1]], ANSWERS)
    after = LocalProvider(provider.job(job.id).fine_tuned_model).score([TRAIN[0][:1]], ANSWERS)
    assert not np.allclose(before, after)


def test_jobs_and_models_commands_for_local(tiny_model, registry, tmp_path, capsys):
    provider, job = new_job(tiny_model, registry, tmp_path, n_epochs=1)
    from rich.console import Console

    provider.drive(job.id, Console(quiet=True))
    model_id = provider.job(job.id).fine_tuned_model
    capsys.readouterr()
    assert main(["models"]) == 0
    assert model_id in capsys.readouterr().err
    assert main(["jobs", "checkpoints", job.id, "--provider", "local"]) == 0
    assert "train_loss" in capsys.readouterr().err
    _, queued = new_job(tiny_model, registry, tmp_path)
    assert main(["jobs", "cancel", queued.id, "--provider", "local"]) == 0
    assert registry.record(queued.id)["status"] == "cancelled"
    assert main(["models", "delete", model_id]) == 0
    assert not (registry.root / model_id).exists()
    assert main(["models", "delete", "no-such-model"]) == 2


def test_a_job_without_checkpoints_is_not_a_usable_model(tiny_model, registry, tmp_path):
    from runner.core.errors import InvalidInput
    from runner.providers.local.provider import LocalProvider

    _, job = new_job(tiny_model, registry, tmp_path)
    model_id = registry.record(job.id)["model_id"]
    with pytest.raises(InvalidInput, match=rf"provider\.model: fine-tuned model '{model_id}' has no checkpoint yet"):
        LocalProvider(model_id)


def test_a_training_failure_marks_the_job_failed(tiny_model, registry, tmp_path, monkeypatch):
    from rich.console import Console

    import runner.providers.local.trainer as training
    from runner.core.errors import EXIT_RUNTIME, RuntimeFailure

    provider, job = new_job(tiny_model, registry, tmp_path)

    def broken(*args):
        raise ValueError("shapes do not match")

    monkeypatch.setattr(training, "batch_loss", broken)
    with pytest.raises(RuntimeFailure, match="failed: ValueError: shapes do not match") as caught:
        provider.drive(job.id, Console(quiet=True))
    assert caught.value.exit_code == EXIT_RUNTIME
    done = provider.job(job.id)
    assert done.status == "failed" and done.error == "ValueError: shapes do not match"


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("pack_tokens", [512, 40])
def test_packed_loss_and_gradients_equal_the_standard_loss(tiny_model, monkeypatch, attention, pack_tokens):
    """batch_loss packs the shared prompt prefix and each row's own tokens into one sequence: the
    same loss and LoRA gradients as transformers' own `labels=` loss on the padded batch. With
    40-token packs the batch splits into several packs, and its longest row takes the padded path."""
    from peft import LoraConfig, get_peft_model

    from runner.providers.local import trainer as training
    from runner.providers.local.model import shared_prefix_length
    from runner.providers.local.provider import LocalProvider

    provider = LocalProvider(str(tiny_model))
    provider.lm.float()  # the packing math is what is tested: in fp32 on every CPU, bf16 ones included
    instruction = "对给定文本进行分类，类别包括：科技、金融、娱乐、世界、汽车。\n\n给定文本：\n"
    texts = [("芯片发布会今天举行", "科技"), ("股市大涨", "金融"), ("新款手机发布了吗" * 4, "科技"), ("看电影", "娱乐")]
    conversations = [
        [{"role": "user", "content": f"{instruction}{text}\n类别："}, {"role": "assistant", "content": answer}]
        for text, answer in texts
    ]
    batch = training.encode(provider.loaded, conversations, 256)
    prefix = shared_prefix_length([ids for ids, _ in batch], 10**6)
    own = [len(ids) - prefix for ids, _ in batch]
    if pack_tokens == 40:
        assert len(training._packs(own, prefix, 40)) >= 3 and max(len(ids) for ids, _ in batch) > 40
    monkeypatch.setattr(training, "PACK_TOKENS", pack_tokens)
    lm = get_peft_model(provider.lm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lm = lm.get_base_model()
    lm.set_attn_implementation(attention)
    lm.train()
    pad = provider.tokenizer.pad_token_id

    def gradients(loss_of):
        lm.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in lm.parameters() if p.requires_grad]

    ids, mask, targets = training.collate(batch, pad, "cpu")
    standard_loss, standard_grads = gradients(lambda: lm(input_ids=ids, attention_mask=mask, labels=targets).loss)
    packed_loss, packed_grads = gradients(lambda: training.batch_loss(lm, batch, pad, "cpu")[0])
    assert packed_loss == pytest.approx(standard_loss, rel=1e-4)
    for standard, packed in zip(standard_grads, packed_grads, strict=True):
        torch.testing.assert_close(packed, standard, rtol=1e-3, atol=1e-4 * float(standard.abs().max()))


def test_packs_fill_up_to_the_limit():
    from runner.providers.local.trainer import _packs

    assert _packs([10, 10, 10, 30, 5], prefix=20, limit=50) == [[0, 1, 2], [3], [4]]
    assert _packs([60, 5], prefix=20, limit=50) == [[0], [1]]  # a row over the limit alone


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_one_pass_head_loss_equals_the_plain_cross_entropy(softcap):
    """The LoRA path's LM-head loss (blocks of the head, running log-sum-exp) gives the plain
    cross-entropy's loss and hidden-state gradient; a trainable or LoRA-wrapped head takes the plain path."""
    from types import SimpleNamespace

    from runner.providers.local import trainer as training

    torch.manual_seed(0)
    vocab = 2 * training.HEAD_BLOCK + 123  # two whole blocks and a partial one
    head = torch.nn.Linear(16, vocab, bias=False).requires_grad_(False)
    torch.nn.init.normal_(head.weight, std=2.0)  # logits spread wide enough for the softcap to bend them
    lm = SimpleNamespace(get_output_embeddings=lambda: head, config=SimpleNamespace(final_logit_softcapping=softcap))
    hidden = torch.randn(7, 16, requires_grad=True)
    targets = torch.tensor([0, 5, vocab - 1, training.HEAD_BLOCK, 17, 17, 3000])

    def loss_and_grad(loss_of):
        hidden.grad = None
        loss = loss_of()
        loss.backward()
        return loss.detach(), hidden.grad.clone()

    plain = loss_and_grad(lambda: torch.nn.functional.cross_entropy(training.output_logits(lm, hidden), targets))
    one_pass = loss_and_grad(lambda: training.answer_cross_entropy(lm, hidden, targets))
    torch.testing.assert_close(one_pass[0], plain[0])
    torch.testing.assert_close(one_pass[1], plain[1])
    with torch.no_grad():  # validation: the loss alone
        torch.testing.assert_close(training.answer_cross_entropy(lm, hidden, targets), plain[0])
    head.weight.requires_grad_(True)  # full fine-tuning: the head's own gradient is needed
    loss = training.answer_cross_entropy(lm, hidden, targets)
    loss.backward()
    assert head.weight.grad is not None


def test_shared_prefix_length():
    from runner.providers.local.model import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]], 10) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]], 2) == 2  # never past the limit
    assert shared_prefix_length([[7], [8]], 5) == 0


def test_epoch_batches_cover_every_example_once_with_little_padding():
    import math
    import random

    from runner.providers.local.trainer import epoch_batches

    lengths = [random.Random(i).randint(8, 53) for i in range(1003)]
    batches = epoch_batches(lengths, 8, seed=5)
    assert sorted(i for batch in batches for i in batch) == list(range(1003))
    assert len(batches) == math.ceil(1003 / 8) and all(1 <= len(b) <= 8 for b in batches)
    assert batches == epoch_batches(lengths, 8, seed=5) and batches != epoch_batches(lengths, 8, seed=6)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths)

    plain = [list(range(s, min(s + 8, 1003))) for s in range(0, 1003, 8)]
    assert padding(batches) < 1.15 < padding(plain)


@pytest.mark.parametrize("sliding_window", [8, 512])
def test_label_scores_equal_a_naive_forward_for_every_row(tmp_path, sliding_window):
    """Shared prefix, right padding, token-packed batches and multi-token labels: every row, the
    shortest in its batch included, scores as one unbatched forward over prompt + label does.
    A sliding window shorter than the prompts takes the exact-length batching path."""
    from runner.providers.local.model import score_answers
    from runner.providers.local.provider import LocalProvider

    folder = make_tiny_gemma(tmp_path / "tiny", sliding_window=sliding_window, initializer_range=0.5)
    provider = LocalProvider(str(folder), batch_size=2)
    instruction = "对给定文本进行分类，类别包括：科技、房产、房地产市场调控。\n\n给定文本：\n"
    texts = ["芯片", "新款手机今天发布了吗", "楼市", "房价上涨的城市越来越多了", "股市大涨"]
    conversations = [[{"role": "user", "content": f"{instruction}{text}\n类别："}] for text in texts]
    answers = ["科技", "房产", "房地产市场调控"]
    lengths = [len(provider.tokenizer.encode(a, add_special_tokens=False)) for a in answers]
    assert max(lengths) >= 3  # a label of three or more tokens
    scores = score_answers(provider.loaded, conversations, answers, batch_size=2)

    def naive(conversation, answer):
        prompt = provider.tokenizer(provider.prompt_text(conversation))["input_ids"]
        answer_ids = provider.tokenizer.encode(answer, add_special_tokens=False)
        with torch.inference_mode():
            logits = provider.lm(input_ids=torch.tensor([prompt + answer_ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return sum(float(logprobs[len(prompt) - 1 + i, token]) for i, token in enumerate(answer_ids))

    tolerance = 0.2 if provider.dtype == torch.bfloat16 else 1e-3
    for row, conversation in enumerate(conversations):
        assert scores[row] == pytest.approx([naive(conversation, a) for a in answers], abs=tolerance)
