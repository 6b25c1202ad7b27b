"""The local model registry: fine-tuning jobs, their events, checkpoints and resulting models.

One folder per job under ~/.cache/specrun/registry/ (SPECRUN_REGISTRY, or SPECRUN_CACHE, moves it):
  job.json        status, base model, settings, progress, checkpoints (with their metrics)
  events.jsonl    loss, step, learning rate, tokens/s, as training goes
  train.jsonl     the training file the job was created from
  checkpoints/step-NNNNNN/   LoRA adapter (or full weights) + optimizer state, for resuming
The job's model id names the folder and can be used as `provider.model` in a later spec;
it loads the newest checkpoint, so a cancelled or interrupted job still leaves a usable model.
Nothing here loads a model: `specrun jobs` and `specrun models` stay instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from runner.errors import InvalidInput
from runner.providers import Checkpoint, Job, JobEvent


def cache_root() -> Path:
    return Path(os.environ.get("SPECRUN_CACHE", Path.home() / ".cache" / "specrun"))


class LocalRegistry:
    def __init__(self, root: Path | None = None):
        self.root = root or Path(os.environ.get("SPECRUN_REGISTRY", cache_root() / "registry"))
        self.root.mkdir(parents=True, exist_ok=True)

    # --- files and records --------------------------------------------------------------------

    def upload(self, path: Path) -> str:
        """A new id per upload, as the cloud APIs give: a job is found again only by the run that made it."""
        data = path.read_bytes()
        file_id = f"file-local-{hashlib.sha256(data).hexdigest()[:8]}-{uuid.uuid4().hex[:8]}"
        target = self.root / "files" / f"{file_id}.jsonl"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
        return file_id

    def file_path(self, file_id: str) -> Path:
        return self.root / "files" / f"{file_id}.jsonl"

    def find(self, job_or_model_id: str) -> dict[str, Any] | None:
        """The job's record, by job id or model id; None when there is no such job."""
        return next((r for r in self._records() if job_or_model_id in (r["id"], r["model_id"])), None)

    def record(self, job_or_model_id: str) -> dict[str, Any]:
        record = self.find(job_or_model_id)
        if record is None:
            raise InvalidInput(f"no local fine-tuning job or model {job_or_model_id!r} (see specrun models list)")
        return record

    def folder(self, job_or_model_id: str) -> Path:
        return self.root / self.record(job_or_model_id)["model_id"]

    def save(self, record: dict[str, Any]) -> None:
        folder = self.root / record["model_id"]
        partial = folder / "job.json.partial"
        partial.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(partial, folder / "job.json")

    def add_event(self, record: dict[str, Any], message: str, **data: Any) -> None:
        event = {"id": f"ev-{uuid.uuid4().hex[:12]}", "created_at": int(time.time()), "message": message, "data": data}
        with (self.root / record["model_id"] / "events.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")

    def _records(self) -> list[dict[str, Any]]:
        records = []
        for path in sorted(self.root.glob("*/job.json")):
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError:
                continue
        return sorted(records, key=lambda record: record["created_at"], reverse=True)

    # --- the lifecycle every provider shares ------------------------------------------------------

    def create_job(self, training_file: str, base_model: str, settings: dict[str, Any]) -> Job:
        if not self.file_path(training_file).is_file():
            raise InvalidInput(f"unknown training file {training_file!r}")
        token = uuid.uuid4().hex[:8]
        suffix = settings.get("suffix") or "ft"
        record = {
            "id": f"ftjob-{token}",
            "model_id": f"{Path(base_model).name}-{suffix}-{token}",
            "object": "fine_tuning.job",
            "status": "queued",
            "base_model": base_model,
            "training_file": training_file,
            "settings": settings,
            "created_at": time.time(),
            "finished_at": None,
            "step": 0,
            "total_steps": None,
            "checkpoints": [],
            "error": None,
        }
        folder = self.root / record["model_id"]
        folder.mkdir(parents=True)
        shutil.copyfile(self.file_path(training_file), folder / "train.jsonl")
        if settings.get("validation_file"):
            shutil.copyfile(self.file_path(settings["validation_file"]), folder / "validation.jsonl")
        self.save(record)
        self.add_event(record, f"Created job {record['id']} on {base_model}")
        return self.job(record["id"])

    def list_jobs(self, limit: int = 100) -> list[Job]:
        return [_job(record) for record in self._records()[:limit]]

    def find_job(self, training_file: str) -> Job | None:
        return next((job for job in self.list_jobs() if job.training_file == training_file), None)

    def job(self, job_id: str) -> Job:
        return _job(self.record(job_id))

    def events(self, job_id: str) -> list[JobEvent]:
        path = self.folder(job_id) / "events.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        return [JobEvent(**json.loads(line)) for line in lines if line.strip()]

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        record = self.record(job_id)
        return [
            Checkpoint(id=c["id"], step=c["step"], metrics=c["metrics"], model=record["model_id"])
            for c in record["checkpoints"]
        ]

    def cancel(self, job_id: str) -> Job:
        record = self.record(job_id)
        if record["status"] not in ("succeeded", "failed"):
            record["status"] = "cancelled"
            record["finished_at"] = time.time()
            self.save(record)
            self.add_event(record, "Job cancelled; the newest checkpoint stays usable")
        return _job(record)

    def delete_model(self, model: str) -> None:
        shutil.rmtree(self.folder(model))

    def latest_checkpoint(self, job_or_model_id: str) -> Path | None:
        record = self.record(job_or_model_id)
        if not record["checkpoints"]:
            return None
        return self.folder(job_or_model_id) / "checkpoints" / record["checkpoints"][-1]["id"]


def _job(record: dict[str, Any]) -> Job:
    return Job(
        id=record["id"],
        status=record["status"],
        model=record["base_model"],
        training_file=record["training_file"],
        fine_tuned_model=record["model_id"] if record["checkpoints"] else None,
        error=record.get("error"),
        trained_tokens=record.get("trained_tokens"),
    )
