"""specrun's command line. Exit codes: 0 ok, 1 a gate failed, 2 invalid input, 3 runtime failure."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from runner.core.errors import SpecrunError
from runner.providers.registry import provider_names
from runner.tasks import task_names

# Logs (not a terminal) get a wide console so tables and long paths stay readable.
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 150)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specrun", description="Run LLM classification experiments from YAML specs.")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_spec(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("spec", type=Path)
        command.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a spec key, e.g. --set data.path=other.json (repeatable)",
        )
        return command

    with_spec("validate", "check the spec, its data and template; load nothing")
    for name, help_text in (
        ("run", "all stages the spec enables"),
        ("prep", "write the chat fine-tuning JSONL"),
        ("eval", "evaluate on the eval split (fine-tuning first if the spec enables it)"),
    ):
        command = with_spec(name, help_text)
        command.add_argument("--limit", type=int, help="evaluate at most N examples")
        command.add_argument("--out", type=Path, default=Path("runs"), help="runs folder (default: ./runs)")
        command.add_argument("--no-cache", action="store_true", help="ask the API again instead of the response cache")
        if name == "run":
            command.add_argument("--dry-run", action="store_true", help="prep + checks + cost estimate; spend nothing")
        command.add_argument(
            "--only",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a matrix spec: run only the cells with this value (repeatable; same key: any of them)",
        )
        command.add_argument(
            "--shard",
            type=_shard,
            metavar="I/N",
            help="a matrix spec: run only part I of N of its (selected) cells, e.g. one CI job of N (docs/scale.md)",
        )
        if name in ("run", "eval"):
            command.add_argument(
                "--against", type=Path, metavar="RUN_DIR", help="an earlier run that `against.…` gates compare with"
            )
    check = commands.add_parser("check", help="data checks on a spec's training file or on any chat JSONL")
    check.add_argument("target", type=Path, metavar="SPEC_OR_JSONL")
    check.add_argument("--model", help="model whose tokenizer, limit and price to use (JSONL; default gpt-4o-mini)")
    check.add_argument(
        "--out", type=Path, help="JSONL: write DIR/checks.json; spec: the runs folder, as for run (default: ./runs)"
    )
    check.add_argument("--json", action="store_true", help="print checks.json to stdout (human lines stay on stderr)")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    init = commands.add_parser("init", help="write a commented spec and template for a dataset")
    init.add_argument("data", type=Path, metavar="DATA_FILE")
    init.add_argument("--task", choices=task_names(), help="default: guessed from the rows")
    init.add_argument("--out", type=Path, default=Path("."), help="folder for NAME.yaml and templates/ (default: .)")
    init.add_argument("--name", help="spec name (default: the data file's name)")
    init.add_argument("--text-field", help="the field holding the text (default: guessed)")
    init.add_argument("--label-field", help="classification: the field holding the label (default: guessed)")
    init.add_argument("--force", action="store_true", help="overwrite a spec or template already there")

    compare = commands.add_parser("compare", help="one table of metrics across runs, and the spec keys that differ")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_GLOB", help="run folders, globs, or a matrix folder")
    compare.add_argument("--format", choices=["table", "markdown", "html"], default="table")
    compare.add_argument("--out", type=Path, help="write to this file instead of the terminal")

    cache = commands.add_parser("cache", help="the response cache: show its size, or clear it")
    cache.add_argument("action", choices=["info", "clear"], nargs="?", default="info")

    jobs = commands.add_parser("jobs", help="fine-tuning jobs at a provider, for jobs started earlier")
    jobs.add_argument("action", choices=["list", "show", "events", "checkpoints", "cancel", "delete-model"])
    jobs.add_argument("id", nargs="?", help="job id (model id for delete-model)")
    jobs.add_argument("--provider", default="openai", choices=provider_names())
    jobs.add_argument("--base-url", help="API root (default: the provider's environment variable, then its SDK)")
    jobs.add_argument("--api-key-env", help="environment variable holding the key")

    models = commands.add_parser("models", help="models fine-tuned here (the local registry)")
    models.add_argument("action", choices=["list", "delete"], nargs="?", default="list")
    models.add_argument("id", nargs="?")
    return parser


def _shard(text: str) -> object:
    """--shard's value, checked by the parser (a bad one is exit 2 naming the flag); matrix.py says how."""
    from runner.commands.matrix import parse_shard

    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one of N processes (accelerate launch, torchrun)
        return _launched(args, exiting=argv is None)
    return main_command(args, exiting=argv is None)


def main_command(args: argparse.Namespace, exiting: bool = False) -> int:
    """The command, its errors as one line and an exit code. exiting: a second Ctrl-C exits at once."""
    from rich.markup import escape

    from runner.core.interrupts import graceful_interrupts
    from runner.core.secrets import redact

    try:
        # Ctrl-C / SIGTERM: KeyboardInterrupt once, a second one exits 130 at once (argv None: the console script)
        with graceful_interrupts(exiting=exiting):
            return _dispatch(args)
    except SpecrunError as error:  # messages may quote a server: no markup, no key
        console.print(f"[red]error:[/] {escape(redact(str(error)))}", highlight=False, soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: run the same command again to resume")
        return 130


def _launched(args: argparse.Namespace, exiting: bool) -> int:
    """Under a launcher the main process runs the command and the others only fine-tune local jobs with
    it (runner/providers/local/distributed.py); the spec is the same as for one process."""
    from runner.providers.local import distributed
    from runner.providers.local.provider import serve_jobs

    if not distributed.start().main:
        try:
            return serve_jobs()
        except SpecrunError as error:
            console.print(f"[red]error[/] (process {distributed.world().rank}): {error}", highlight=False)
            return error.exit_code
    try:
        return main_command(args, exiting)
    finally:
        distributed.release_workers()


#: command -> "module:function(args, console) -> exit code"; each command lives in one module.
COMMANDS = {
    **dict.fromkeys(("validate", "run", "prep", "check", "eval"), "runner.commands.spec:spec_command"),
    "init": "runner.commands.init:init_command",
    "compare": "runner.commands.compare:compare_command",
    "jobs": "runner.commands.jobs:jobs_command",
    "models": "runner.commands.jobs:models_command",
    "cache": "runner.commands.cache:cache_command",
}


def _dispatch(args: argparse.Namespace) -> int:
    """Import only the command asked for: `specrun validate` never loads torch."""
    import importlib

    module, _, function = COMMANDS[args.command].partition(":")
    return getattr(importlib.import_module(module), function)(args, console)


if __name__ == "__main__":
    sys.exit(main())
