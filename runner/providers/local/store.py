"""The local model registry: fine-tuning jobs, their events, checkpoints and resulting models.

One folder per job under ~/.cache/specrun/registry/ (SPECRUN_REGISTRY, or SPECRUN_CACHE, moves it):
  job.json        status, base model, settings, progress, checkpoints (with their metrics)
  events.jsonl    loss, step, learning rate, tokens/s, as training goes
  train.jsonl     the training file the job was created from
  checkpoints/step-NNNNNN/   LoRA adapter (or full weights) + optimizer state, for resuming
The job's model id names the folder and can be used as `provider.model` in a later spec;
it loads the newest checkpoint, so a cancelled or interrupted job still leaves a usable model.
Nothing here loads a model: `specrun jobs` and `specrun models` stay instant.
Records are checked as they are read: a damaged job.json or events.jsonl is a RuntimeFailure
naming the file (and line), never a KeyError or a silently missing job.
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

from runner import cache_root
from runner.core.errors import InvalidInput, RuntimeFailure
from runner.core.files import write_atomic
from runner.core.jsonl import dumps
from runner.providers import Checkpoint, Job, JobEvent, check_id

#: Fields every job.json has, with their types (what list, show, resume and loading a model read).
RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "model_id": str,
    "status": str,
    "base_model": str,
    "created_at": (int, float),
    "settings": dict,
    "step": int,
    "checkpoints": list,
}


class LocalRegistry:
    def __init__(self, root: Path | None = None):
        self.root = root or Path(os.environ.get("SPECRUN_REGISTRY", cache_root() / "registry"))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RuntimeFailure(
                f"model registry {self.root}: cannot create it ({error.strerror or error}); "
                "point SPECRUN_REGISTRY (or SPECRUN_CACHE) at a writable folder"
            ) from None

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
        check_id(file_id, "training file id")  # a path built from it stays in files/
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
        write_atomic(folder / "job.json", dumps(record, indent=2))

    def add_event(self, record: dict[str, Any], message: str, **data: Any) -> None:
        event = {"id": f"ev-{uuid.uuid4().hex[:12]}", "created_at": int(time.time()), "message": message, "data": data}
        with (self.root / record["model_id"] / "events.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(dumps(event) + "\n")

    def _records(self) -> list[dict[str, Any]]:
        records = [_read_record(path) for path in sorted(self.root.glob("*/job.json"))]
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
        if not path.is_file():
            return []
        events = []
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    event = json.loads(raw)
                    events.append(
                        JobEvent(
                            id=str(event["id"]),
                            created_at=int(event["created_at"]),
                            message=str(event["message"]),
                            data=dict(event.get("data") or {}),
                        )
                    )
                except (ValueError, TypeError, KeyError, RecursionError) as error:
                    if not raw.endswith(b"\n"):
                        break  # the last line, cut short by a kill mid-write: the events before it stand
                    raise RuntimeFailure(f"{path}:{number}: corrupt job event ({_why(error)})") from None
        return events

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        record = self.record(job_id)
        return [
            Checkpoint(id=c["id"], step=c["step"], metrics=c.get("metrics", {}), model=record["model_id"])
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
        """Remove the model's folder; one that is a link (or leads out of the store) is refused, untouched:
        deleting through it would remove what lies outside the store."""
        folder = self.folder(model)
        if folder.is_symlink() or folder.resolve().parent != self.root.resolve():
            raise RuntimeFailure(
                f"{folder}: is a symbolic link, not a folder of the model store; nothing was deleted "
                "(remove the link itself if you made it)"
            )
        try:
            shutil.rmtree(folder)
        except OSError as error:
            raise RuntimeFailure(f"{folder}: cannot delete it: {error.strerror or error}") from None

    def latest_checkpoint(self, job_or_model_id: str) -> Path | None:
        record = self.record(job_or_model_id)
        if not record["checkpoints"]:
            return None
        return self.folder(job_or_model_id) / "checkpoints" / record["checkpoints"][-1]["id"]


def _why(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"field {error.args[0]!r} is missing"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(error, json.JSONDecodeError):
        return f"not JSON: {error.msg} at line {error.lineno} column {error.colno}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _read_record(path: Path) -> dict[str, Any]:
    """A job.json, checked field by field; RuntimeFailure naming the file when it is damaged."""
    advice = f"fix it, or delete the folder {path.parent}"
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        raise RuntimeFailure(f"{path}: corrupt fine-tuning job record ({_why(error)}); {advice}") from None
    if not isinstance(record, dict):
        raise RuntimeFailure(f"{path}: corrupt fine-tuning job record (not a JSON object); {advice}")
    for key, types in RECORD_FIELDS.items():
        value = record.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            kinds = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            problem = "is missing" if key not in record else f"is not {kinds}"
            raise RuntimeFailure(f"{path}: corrupt fine-tuning job record (field {key!r} {problem}); {advice}")
    if record["model_id"] != path.parent.name:  # every path is built from it: it must name this folder
        raise RuntimeFailure(
            f"{path}: corrupt fine-tuning job record (field 'model_id' {record['model_id']!r} is not the name of "
            f"its folder, {path.parent.name!r}); {advice}"
        )
    for number, checkpoint in enumerate(record["checkpoints"]):
        if not (
            isinstance(checkpoint, dict)
            and isinstance(checkpoint.get("id"), str)
            and isinstance(checkpoint.get("step"), int)
            and isinstance(checkpoint.get("metrics", {}), dict)
        ):
            raise RuntimeFailure(
                f"{path}: corrupt fine-tuning job record (checkpoints[{number}] needs an id, a step and metrics); "
                f"{advice}"
            )
    return record


def _job(record: dict[str, Any]) -> Job:
    return Job(
        id=record["id"],
        status=record["status"],
        model=record["base_model"],
        training_file=record.get("training_file"),
        fine_tuned_model=record["model_id"] if record["checkpoints"] else None,
        error=record.get("error"),
        trained_tokens=record.get("trained_tokens"),
    )
