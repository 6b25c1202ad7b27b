"""A loopback server that speaks the OpenAI and ZhipuAI routes specrun uses, with fault injection.

The real `openai` and `zhipuai` SDK clients talk to it over HTTP on 127.0.0.1:
  OpenAI  base_url http://127.0.0.1:PORT/v1
  ZhipuAI base_url http://127.0.0.1:PORT/api/paas/v4
Routes: chat/completions (with logprobs/top_logprobs), completions (echo + logprobs, prompt lists), files, fine_tuning/jobs (create, list, retrieve, events, checkpoints,
cancel), models/{id} (OpenAI delete) and fine_tuning/fine_tuned_models/{id} (ZhipuAI delete).
Run as a script (`python tests/fake_api.py --port 0 --delay 0.02`) for benchmarks in another process.
"""

from __future__ import annotations

import argparse
import email
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "503", "slow", "drop", "malformed")
#: How a hostile server can break a score: a log-probability that is not a finite number (written
#: literally, as some servers do: NaN, Infinity, -Infinity, -1e309 which parses as -inf), or
#: top_logprobs bytes that are no bytes.
NUMBER_FAULTS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "-1e309": "-1e309"}
BYTES_FAULTS = {"bytes:999": [999], "bytes:-1": [-1], "bytes:str": ["a"]}
SCORE_FAULTS = (*NUMBER_FAULTS, *BYTES_FAULTS)
_SCORE_MARK = "__score_fault__"

TOPICS = {"科技": "芯片手机汽车智能", "金融": "行股率财", "体育": "球赛马拉松"}


def keyword_answer(messages: list[dict[str, str]], model: str) -> str:
    """Base models answer verbosely; fine-tuned ('ft:') ones with the bare label."""
    text = messages[-1]["content"].rsplit("文本：", 1)[-1]
    topic = max(TOPICS, key=lambda t: sum(ch in text for ch in TOPICS[t]))
    return topic if model.startswith("ft:") else f"这条新闻属于{topic}类别。"


# --- label scoring (issue 11): a fake model's log-probabilities --------------------------------------
# The default "model" reads one character as one token. After the last 类别：, the keyword topic
# of the text costs 0.1 nats a character and anything else 2.5; every other character costs 1.


def keyword_logprobs(text: str) -> tuple[list[str], list[int], list[float | None]]:
    """tokens, text_offset and token_logprobs of `text` as an echoing completions server returns them."""
    prompt, _, answer = text.rpartition("类别：")
    prompt += "类别：" if answer or text.endswith("类别：") else ""
    topic = keyword_answer([{"role": "user", "content": prompt}], "ft:") if prompt else ""
    logprobs: list[float | None] = [None] + [-1.0] * (len(prompt) - 1) if prompt else []
    for i in range(len(text) - len(prompt)):
        logprobs.append(-0.1 if topic.startswith(text[len(prompt) : len(prompt) + i + 1]) else -2.5)
    return list(text), list(range(len(text))), logprobs


def keyword_top_logprobs(messages: list[dict[str, str]], model: str, n: int) -> list[tuple[str, float]]:
    """The first answer token's top-n: the keyword topic (one token a word) first, then the other topics."""
    topic = keyword_answer(messages, "ft:")
    others = [t for t in TOPICS if t != topic]
    entries = [(topic, -0.05), ("这", -3.2)] + [(t, -4.0 - i) for i, t in enumerate(others)]
    return entries[:n]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that timed out and left is expected
        pass


@dataclass
class FakeAPI:
    api_key: str = "sk-test"
    delay: float = 0.0  # seconds before each chat answer
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULTS
    slow_seconds: float = 2.0
    seed: int = 0
    answer: Callable[[list[dict[str, str]], str], str] = keyword_answer
    job_steps: int = 3  # job retrievals from queued to succeeded
    hold_job_create: float = 0.0  # sleep after creating a job, before answering (crash-window tests)
    refuse_fine_tuning: str | None = None  # an error message: job creation is answered 403 with it
    # What happened, for assertions:
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    faults_injected: list[str] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    raw_paths: list[tuple[str, str]] = field(default_factory=list)  # (method, path as sent, query and all)
    authorization: list[str] = field(default_factory=list)
    # Label scoring (issue 11): /completions with echo + logprobs, chat logprobs + top_logprobs.
    # text -> (tokens, text_offset, token_logprobs), or None: a server that answers without logprobs
    completion_logprobs: Callable[[str], tuple[list[str], list[int], list[float | None]] | None] = keyword_logprobs
    chat_top_logprobs: Callable[[list[dict[str, str]], str, int], list[tuple[str, float]]] = keyword_top_logprobs
    max_prompts_per_request: int | None = None  # llama-cpp-python's server takes 1 (and answers 500 to more)
    completion_requests: list[dict[str, Any]] = field(default_factory=list)
    # Malformed scores (issue 21): one of SCORE_FAULTS, sent in the next `score_fault_times` answers
    # with log-probabilities (every label token's logprob, or every top_logprobs entry's bytes).
    score_fault: str | None = None
    score_fault_times: int = 1_000_000
    score_faults_sent: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._ids = itertools.count(1)
        self.server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def zhipuai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/paas/v4"

    def start(self) -> FakeAPI:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids):04d}"

    def draw_score_fault(self) -> str | None:
        with self._lock:
            if self.score_fault and self.score_faults_sent < self.score_fault_times:
                self.score_faults_sent += 1
                return self.score_fault
        return None

    def draw_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate and self._rng.random() < self.fault_rate:
                fault = self._rng.choice(self.fault_kinds)
                self.faults_injected.append(fault)
                return fault
        return None

    # --- jobs ---------------------------------------------------------------------------------

    def create_job(self, body: dict[str, Any], zhipu: bool) -> dict[str, Any]:
        job_id = self.next_id("ftjob")
        method = body.get("method") or {}
        hyper = (method.get("supervised") or {}).get("hyperparameters") or body.get("hyperparameters") or {}
        job = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": body["model"],
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "org-test",
            "result_files": [],
            "status": "validating_files",
            "validation_file": body.get("validation_file"),
            "training_file": body["training_file"],
            "hyperparameters": {"n_epochs": hyper.get("n_epochs", "auto")},
            "trained_tokens": None,
            "error": None,
            "seed": body.get("seed", 0),
            "suffix": body.get("suffix"),
            "_steps": 0,
            "_events": [self._event(job_id, "Validating training file")],
            "_checkpoints": [],
            "_zhipu": zhipu,
        }
        with self._lock:
            self.jobs[job_id] = job
        return job

    def _event(self, job_id: str, message: str, data: dict | None = None) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job.event",
            "id": self.next_id("ftevent"),
            "created_at": int(time.time()),
            "level": "info",
            "message": message,
            "data": data or {},
            "type": "metrics" if data else "message",
        }

    def advance(self, job: dict[str, Any]) -> None:
        """Each retrieval moves a job one step: validating → queued → running (steps) → succeeded."""
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        job["_steps"] += 1
        step = job["_steps"]
        if step == 1:
            job["status"] = "queued"
            job["_events"].append(self._event(job["id"], "Files validated, job queued"))
        elif step < 2 + self.job_steps:
            job["status"] = "running"
            n = step - 1
            loss = round(2.0 / n, 3)
            job["_events"].append(
                self._event(
                    job["id"], f"Step {n}/{self.job_steps}: training loss={loss}", {"step": n, "train_loss": loss}
                )
            )
            job["_checkpoints"].append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": self.next_id("ftckpt"),
                    "created_at": int(time.time()),
                    "fine_tuned_model_checkpoint": f"ft:{job['model']}:org:{job['suffix'] or 'x'}:{job['id']}:ckpt-step-{n}",
                    "fine_tuning_job_id": job["id"],
                    "metrics": {"step": n, "train_loss": loss, "train_mean_token_accuracy": 0.5 + n / 10},
                    "step_number": n,
                }
            )
        else:
            job["status"] = "succeeded"
            job["finished_at"] = int(time.time())
            job["trained_tokens"] = 1234
            job["fine_tuned_model"] = f"ft:{job['model']}:org:{job['suffix'] or 'x'}:{job['id']}"
            job["_events"].append(self._event(job["id"], "The job has successfully completed"))

    @staticmethod
    def public(job: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in job.items() if not key.startswith("_")}


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet
            pass

        # --- plumbing ---------------------------------------------------------------------------

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None):
            body = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str, code: str = "error", headers: dict | None = None):
            self._send(status, {"error": {"message": message, "type": code, "code": code}}, headers)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _route(self, method: str):
            api.raw_paths.append((method, self.path))
            path = self.path.split("?", 1)[0]
            zhipu = path.startswith("/api/paas/v4/")
            prefix = "/api/paas/v4" if zhipu else "/v1"
            if not path.startswith(prefix + "/"):
                return self._error(404, f"no route {path}")
            route = path[len(prefix) :]
            body = self._body()
            api.requests.append((method, route))
            api.authorization.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != f"Bearer {api.api_key}":
                return self._error(401, "Incorrect API key provided", "invalid_api_key")
            fault = api.draw_fault()
            if fault == "429":
                return self._error(429, "Rate limit reached", "rate_limit_exceeded", {"Retry-After": "0.05"})
            if fault in ("500", "503"):
                return self._error(int(fault), "The server had an error", "server_error")
            if fault == "slow":
                time.sleep(api.slow_seconds)
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            if fault == "malformed":
                return self._send(200, None, raw=b'{"id": "broken", "choices": [')
            return self._dispatch(method, route, body, zhipu)

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_DELETE(self):
            self._route("DELETE")

        # --- routes -------------------------------------------------------------------------------

        def _dispatch(self, method: str, route: str, body: bytes, zhipu: bool):
            parts = route.strip("/").split("/")
            if method == "POST" and route == "/chat/completions":
                return self._chat(json.loads(body), zhipu)
            if method == "POST" and route == "/completions":
                return self._completions(json.loads(body))
            if method == "POST" and route == "/files":
                return self._upload(body)
            if parts[:2] == ["fine_tuning", "jobs"]:
                return self._jobs(method, parts[2:], body, zhipu)
            if method == "DELETE" and (parts[0] == "models" or parts[:2] == ["fine_tuning", "fine_tuned_models"]):
                model = parts[-1]
                if zhipu:
                    return self._send(200, {"fine_tuned_model": model, "status": "deleted"})
                return self._send(200, {"id": model, "object": "model", "deleted": True})
            return self._error(404, f"no route {method} {route}")

        def _chat(self, request: dict[str, Any], zhipu: bool):
            if api.delay:
                time.sleep(api.delay)
            api.chat_requests.append(request)
            text = api.answer(request["messages"], request["model"])
            prompt_tokens = sum(len(m.get("content") or "") for m in request["messages"])
            response = {
                "id": api.next_id("chatcmpl"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(text),
                    "total_tokens": prompt_tokens + len(text),
                },
            }
            if request.get("logprobs") and not zhipu:
                response["choices"][0]["logprobs"] = self._chat_logprobs(request)
                if fault := api.draw_score_fault():
                    for entry in response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]:
                        if fault in BYTES_FAULTS:
                            entry["bytes"] = BYTES_FAULTS[fault]
                        else:
                            entry["logprob"] = _SCORE_MARK
                    return self._send(200, None, raw=_with_score_fault(response, fault))
            if zhipu:
                response["request_id"] = response["id"]
            return self._send(200, response)

        # --- label scoring (issue 11) ----------------------------------------------------------------

        def _chat_logprobs(self, request: dict[str, Any]) -> dict[str, Any]:
            top = api.chat_top_logprobs(request["messages"], request["model"], int(request.get("top_logprobs") or 0))
            entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
            first = entries[0] if entries else {"token": "", "logprob": 0.0, "bytes": []}
            return {"content": [{**first, "top_logprobs": entries}], "refusal": None}

        def _completions(self, request: dict[str, Any]):
            """Legacy /v1/completions: with echo, the prompt's own tokens and their log-probabilities."""
            if api.delay:
                time.sleep(api.delay)
            api.completion_requests.append(request)
            prompts = request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]
            if api.max_prompts_per_request and len(prompts) > api.max_prompts_per_request:
                return self._error(500, "Internal Server Error", "server_error")
            choices, prompt_tokens, completion_tokens = [], 0, 0
            for index, prompt in enumerate(prompts):
                computed = api.completion_logprobs(prompt)
                tokens, offsets, logprobs = computed or ([], [], [])
                generated = min(int(request.get("max_tokens") or 0), 1)
                if generated:  # one generated token after the prompt: "。"
                    tokens, offsets, logprobs = [*tokens, "。"], [*offsets, len(prompt)], [*logprobs, -0.5]
                text = (prompt if request.get("echo") else "") + "。" * generated
                if not request.get("echo"):
                    keep = len(tokens) - generated
                    tokens, offsets, logprobs = tokens[keep:], offsets[keep:], logprobs[keep:]
                choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": "length", "logprobs": None}
                if request.get("logprobs") is not None and computed is not None:
                    choice["logprobs"] = {
                        "tokens": tokens,
                        "text_offset": offsets,
                        "token_logprobs": logprobs,
                        "top_logprobs": [
                            None if lp is None else {t: lp} for t, lp in zip(tokens, logprobs, strict=True)
                        ],
                    }
                choices.append(choice)
                prompt_tokens += len(tokens) - generated
                completion_tokens += generated
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            response = {
                "id": api.next_id("cmpl"),
                "object": "text_completion",
                "created": int(time.time()),
                "model": request["model"],
                "choices": choices,
                "usage": usage,
            }
            if (fault := api.draw_score_fault()) in NUMBER_FAULTS:
                for choice in choices:
                    if choice["logprobs"]:
                        values = choice["logprobs"]["token_logprobs"]
                        values[:] = [None if value is None else _SCORE_MARK for value in values]
                return self._send(200, None, raw=_with_score_fault(response, fault))
            return self._send(200, response)

        def _upload(self, body: bytes):
            message = email.message_from_bytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
            )
            fields = {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}
            content = fields["file"].get_payload(decode=True)
            purpose = fields["purpose"].get_payload(decode=True).decode()
            file_id = api.next_id("file")
            record = {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": fields["file"].get_filename(),
                "purpose": purpose,
                "status": "processed",
            }
            api.files[file_id] = {**record, "content": content}
            return self._send(200, record)

        def _jobs(self, method: str, rest: list[str], body: bytes, zhipu: bool):
            if method == "POST" and not rest:
                request = json.loads(body)
                if api.refuse_fine_tuning:
                    return self._error(403, api.refuse_fine_tuning, "permission_denied")
                if request["training_file"] not in api.files:
                    return self._error(400, f"invalid training_file: {request['training_file']}", "invalid_request")
                job = api.create_job(request, zhipu)
                if api.hold_job_create:
                    time.sleep(api.hold_job_create)
                return self._send(200, api.public(job))
            if method == "GET" and not rest:
                jobs = sorted(api.jobs.values(), key=lambda job: job["id"], reverse=True)
                return self._send(200, {"object": "list", "data": [api.public(j) for j in jobs], "has_more": False})
            job = api.jobs.get(rest[0])
            if job is None:
                return self._error(404, f"no fine-tuning job {rest[0]}", "not_found")
            if method == "GET" and len(rest) == 1:
                api.advance(job)
                return self._send(200, api.public(job))
            if method == "POST" and rest[1:] == ["cancel"]:
                if job["status"] not in ("succeeded", "failed"):
                    job["status"] = "cancelled"
                    job["_events"].append(api._event(job["id"], "Job cancelled"))
                return self._send(200, api.public(job))
            if method == "GET" and rest[1:] == ["events"]:
                events = list(reversed(job["_events"]))  # newest first, as the APIs answer
                return self._send(200, {"object": "list", "data": events, "has_more": False})
            if method == "GET" and rest[1:] == ["checkpoints"] and not zhipu:
                checkpoints = list(reversed(job["_checkpoints"]))
                return self._send(200, {"object": "list", "data": checkpoints, "has_more": False})
            return self._error(404, f"no route {method} fine_tuning/jobs/{'/'.join(rest)}")

    return Handler


def _with_score_fault(response: dict[str, Any], fault: str) -> bytes:
    """The body with every marked log-probability written as the fault's literal (json.dumps cannot write -1e309)."""
    return json.dumps(response, ensure_ascii=False).replace(f'"{_SCORE_MARK}"', NUMBER_FAULTS.get(fault, "0")).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--api-key", default="sk-bench")
    args = parser.parse_args()
    api = FakeAPI(api_key=args.api_key, delay=args.delay)
    print(api.port, flush=True)
    api.server.serve_forever()


if __name__ == "__main__":
    main()
