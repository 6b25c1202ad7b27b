"""`specrun jobs …`: look after fine-tuning jobs started earlier, by id."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner.core.errors import EXIT_INVALID, EXIT_OK
from runner.providers import check_id
from runner.providers.api.transport import check_base_url
from runner.providers.local.provider import LocalProvider
from runner.providers.registry import provider_class


def models_command(args: argparse.Namespace, console: Console) -> int:
    """`specrun models list|delete`: the models fine-tuned here."""
    registry = LocalProvider.model_store()
    if args.action == "delete":
        if not args.id:
            console.print("[red]error:[/] models delete needs a model id")
            return EXIT_INVALID
        registry.delete_model(args.id)
        console.print(f"deleted {args.id}")
        return EXIT_OK
    table = Table(title=str(registry.root))
    table.add_column("model", overflow="fold")
    for column in ("base", "status", "steps", "train loss", "valid acc", "created"):
        table.add_column(column)
    for job in registry.list_jobs():
        record = registry.record(job.id)  # checked by the registry: fields have their types
        last = record["checkpoints"][-1].get("metrics") or {} if record["checkpoints"] else {}
        table.add_row(
            escape(record["model_id"]),
            escape(str(record["base_model"])),
            escape(str(record["status"])),
            f"{record.get('step', 0)}/{record.get('total_steps') or '?'}",
            escape(str(last.get("train_loss", ""))),
            escape(str(last.get("valid_accuracy", ""))),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(record["created_at"])),
        )
    console.print(table)
    return EXIT_OK


def jobs_command(args: argparse.Namespace, console: Console) -> int:
    if args.action != "list" and not args.id:
        console.print(f"[red]error:[/] jobs {args.action} needs an id")
        return EXIT_INVALID
    if args.action != "list":  # before a key is looked up or a request made: exit 2 naming the id
        check_id(args.id, "model id" if args.action == "delete-model" else "job id")
    if args.base_url is not None:
        check_base_url(args.base_url, "--base-url")
    # The provider's own answer to "what looks after jobs": an API client, or the local model store.
    config = {"name": args.provider, "model": "-", "base_url": args.base_url, "api_key_env": args.api_key_env}
    provider = provider_class(args.provider).open_jobs(config)
    if args.action == "list":
        # What a server (or a registry file) says is printed as text, never read as rich markup.
        table = Table("job", "status", "model", "fine-tuned model")
        for job in provider.list_jobs():
            table.add_row(escape(job.id), escape(job.status), escape(job.model), escape(job.fine_tuned_model or ""))
        console.print(table)
    elif args.action in ("show", "cancel"):
        job = provider.cancel(args.id) if args.action == "cancel" else provider.job(args.id)
        for key, value in job.__dict__.items():
            console.print(escape(f"{key}: {value}"), highlight=False)
    elif args.action == "events":
        for event in provider.events(args.id):
            console.print(escape(f"{event.created_at} {event.message}"), highlight=False)
    elif args.action == "checkpoints":
        checkpoints = provider.checkpoints(args.id)
        if not checkpoints:
            console.print(f"no checkpoints ({args.provider} may not list them)")
        for checkpoint in checkpoints:
            console.print(escape(f"step {checkpoint.step}: {checkpoint.metrics} → {checkpoint.model}"), highlight=False)
    else:
        provider.delete_model(args.id)
        console.print(f"deleted {args.id}")
    return EXIT_OK
