"""specrun's command line. Exit codes: 0 ok, 1 a gate failed, 2 invalid input, 3 runtime failure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from runner.core.errors import EXIT_INVALID, EXIT_OK, SpecrunError

if TYPE_CHECKING:
    from runner.commands.matrix import Matrix

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
    init.add_argument("--task", choices=["classification", "extraction"], help="default: guessed from the rows")
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
    jobs.add_argument("--provider", default="openai", choices=["openai", "zhipuai", "local"])
    jobs.add_argument("--base-url", help="API root (default: the provider's environment variable, then its SDK)")
    jobs.add_argument("--api-key-env", help="environment variable holding the key")

    models = commands.add_parser("models", help="models fine-tuned here (the local registry)")
    models.add_argument("action", choices=["list", "delete"], nargs="?", default="list")
    models.add_argument("id", nargs="?")
    return parser


def main(argv: list[str] | None = None) -> int:
    from rich.markup import escape

    from runner.core.interrupts import graceful_interrupts
    from runner.core.secrets import redact

    args = _parser().parse_args(argv)
    try:
        # Ctrl-C / SIGTERM: KeyboardInterrupt once, a second one exits 130 at once (argv None: the console script)
        with graceful_interrupts(exiting=argv is None):
            return _dispatch(args)
    except SpecrunError as error:  # messages may quote a server: no markup, no key
        console.print(f"[red]error:[/] {escape(redact(str(error)))}", highlight=False, soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: run the same command again to resume")
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from runner.config.spec import load_spec

    if args.command == "cache":
        return _cache(args.action)
    if args.command == "compare":
        from runner.commands.compare import compare_command

        return compare_command(args.runs, args.format, args.out, console)
    if args.command in ("jobs", "models"):
        from runner.commands.jobs import jobs_command, models_command

        return (jobs_command if args.command == "jobs" else models_command)(args, console)
    if args.command == "init":
        from runner.commands.init import init_command

        return init_command(args, console)
    if args.command == "check":
        from runner.data.chat_checks import check_target_kind

        if check_target_kind(args.target) == "data":  # by suffix, then content: never a spec read as data
            return _check_jsonl(
                args.target,
                "gpt-4o-mini-2024-07-18" if args.model is None else args.model,
                args.overrides,
                args.out,
                args.json,
            )
    from runner.commands.matrix import read_matrix

    matrix = read_matrix(args.target if args.command == "check" else args.spec, args.overrides)
    if matrix is not None:
        return _matrix(matrix, args)
    if getattr(args, "only", None):
        console.print(f"[red]error:[/] --only picks cells of a matrix; {escape(str(args.spec))} has no matrix")
        return EXIT_INVALID
    spec = load_spec(args.target if args.command == "check" else args.spec, args.overrides)
    if args.command == "validate":
        from runner.pipeline import prepare

        splits = prepare(spec).splits  # reads every split and renders every prompt; loads no model
        console.print(
            f"[green]valid[/]: {escape(str(spec.path))} ({spec.task}; {len(splits.train)} train, "
            f"{len(splits.validation)} validation, {len(splits.eval)} eval examples)"
        )
        return EXIT_OK
    from runner.pipeline import COMMAND_STAGES, run_spec

    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        console.print("[red]error:[/] --limit must be at least 1")
        return EXIT_INVALID
    outcome = run_spec(
        spec,
        stages=COMMAND_STAGES[args.command],
        limit=limit,
        dry_run=getattr(args, "dry_run", False),
        out_dir=args.out or Path("runs"),
        console=console,
        use_cache=not getattr(args, "no_cache", False),
        against=getattr(args, "against", None),
    )
    if getattr(args, "json", False) and outcome.checks is not None:
        _print_json(outcome.checks)
    return outcome.exit_code


def _matrix(matrix: Matrix, args: argparse.Namespace) -> int:
    """A spec with `matrix:`: validate or run its cells (runner/commands/matrix.py)."""
    from runner.commands.matrix import run_matrix, validate_matrix
    from runner.core.errors import InvalidInput
    from runner.pipeline import COMMAND_STAGES

    if args.command == "validate":
        return validate_matrix(matrix, args.overrides, console)
    if args.command == "check":
        raise InvalidInput(
            "a matrix spec's cells are checked by specrun run; check one with run --dry-run --only",
            where=str(matrix.path),
        )
    if args.limit is not None and args.limit < 1:
        raise InvalidInput("--limit must be at least 1")
    return run_matrix(
        matrix,
        overrides=args.overrides,
        only=args.only,
        stages=COMMAND_STAGES[args.command],
        limit=args.limit,
        dry_run=getattr(args, "dry_run", False),
        out_dir=args.out or Path("runs"),
        console=console,
        use_cache=not args.no_cache,
        against=getattr(args, "against", None),
    )


def _cache(action: str) -> int:
    from runner.core.cache import ResponseCache

    cache = ResponseCache()
    if action == "clear":
        console.print(f"cleared {cache.clear()} cached responses from {cache.path}")
    stats = cache.stats()
    console.print(f"{stats['path']}: {stats['entries']} responses, {stats['bytes'] / 1e6:.1f} MB")
    return EXIT_OK


def _check_jsonl(
    path: Path, model: str, overrides: list[str] | None = None, out: Path | None = None, as_json: bool = False
) -> int:
    from runner.core.errors import InvalidInput
    from runner.core.runfolder import make_dir
    from runner.core.tokens import encoding_name
    from runner.data.chat_checks import run_checks, summary_lines

    if overrides:
        raise InvalidInput(f"--set {overrides[0]!r}: --set changes a spec; {path} is a data file")
    if encoding_name(model) is None:
        raise InvalidInput(f"--model {model!r}: no shipped tiktoken encoding for this model")
    if out is not None:
        make_dir(out, "--out")  # a folder that cannot be made is found before the checks run
    checks = run_checks(path, model)  # empty, non-UTF-8 or unreadable files: InvalidInput (exit 2)
    for line in summary_lines(checks):
        console.print(line, highlight=False, markup=False)
    if out is not None:
        console.print(f"checks: {_write_checks(checks, out)}", highlight=False, markup=False)
    if as_json:
        _print_json(checks)
    return EXIT_INVALID if checks["format_errors"] else EXIT_OK


def _write_checks(checks: dict, out: Path) -> Path:
    """out/checks.json, written whole or not at all; a folder that cannot hold it is exit 3."""
    import json

    from runner.core.errors import RuntimeFailure
    from runner.core.files import write_atomic

    target = out / "checks.json"
    try:
        write_atomic(target, json.dumps(checks, ensure_ascii=False, indent=2) + "\n")
    except OSError as error:
        raise RuntimeFailure(f"--out {out}: cannot write checks.json: {error.strerror or error}") from None
    return target


def _print_json(value: dict) -> None:
    """The only thing a command prints to stdout, so `specrun check --json … | jq` reads it whole."""
    import json

    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
