"""`specrun validate | run | prep | check | eval SPEC`: one spec, or every cell of a matrix spec.

validate reads every split and renders every prompt and loads nothing; the others walk the
pipeline's stages for their command (runner/pipeline/__init__.py: COMMAND_STAGES).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from runner.commands.check import check_jsonl_command, print_json
from runner.commands.matrix import Matrix, read_matrix, run_matrix, validate_matrix
from runner.config.spec import load_spec
from runner.core.errors import EXIT_OK, InvalidInput
from runner.data.chat_checks import check_target_kind
from runner.pipeline import COMMAND_STAGES, prepare, run_spec


def spec_command(args: argparse.Namespace, console: Console) -> int:
    if args.command == "check" and check_target_kind(args.target) == "data":  # by suffix, then content
        return check_jsonl_command(args, console)
    path = args.target if args.command == "check" else args.spec
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise InvalidInput("--limit must be at least 1")
    matrix = read_matrix(path, args.overrides)
    if matrix is not None:
        return _matrix(matrix, args, console)
    if getattr(args, "only", None):
        raise InvalidInput(f"--only picks cells of a matrix; {path} has no matrix")
    if getattr(args, "shard", None):
        raise InvalidInput(f"--shard splits the cells of a matrix; {path} has no matrix")
    spec = load_spec(path, args.overrides)
    if args.command == "validate":
        splits = prepare(spec).splits  # reads every split and renders every prompt; loads no model
        console.print(
            f"[green]valid[/]: {escape(str(spec.path))} ({spec.task}; {len(splits.train)} train, "
            f"{len(splits.validation)} validation, {len(splits.eval)} eval examples)"
        )
        return EXIT_OK
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
        print_json(outcome.checks)
    return outcome.exit_code


def _matrix(matrix: Matrix, args: argparse.Namespace, console: Console) -> int:
    """A spec with `matrix:`: validate or run its cells (runner/commands/matrix.py)."""
    if args.command == "validate":
        return validate_matrix(matrix, args.overrides, console)
    if args.command == "check":
        raise InvalidInput(
            "a matrix spec's cells are checked by specrun run; check one with run --dry-run --only",
            where=str(matrix.path),
        )
    return run_matrix(
        matrix,
        overrides=args.overrides,
        only=args.only,
        shard=getattr(args, "shard", None),
        stages=COMMAND_STAGES[args.command],
        limit=args.limit,
        dry_run=getattr(args, "dry_run", False),
        out_dir=args.out or Path("runs"),
        console=console,
        use_cache=not args.no_cache,
        against=getattr(args, "against", None),
    )
