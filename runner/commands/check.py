"""`specrun check FILE.jsonl`: the cookbook's data checks on any chat JSONL, no spec needed.

(`specrun check SPEC` runs a spec's prep and check stages: runner/commands/spec.py.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from runner.core.errors import EXIT_INVALID, EXIT_OK, InvalidInput, RuntimeFailure
from runner.core.files import write_atomic
from runner.core.jsonl import dumps
from runner.core.runfolder import make_dir
from runner.core.tokens import encoding_name
from runner.data.chat_checks import run_checks, summary_lines

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"  # whose tokenizer, context limit and price a bare JSONL is checked with


def check_jsonl_command(args: argparse.Namespace, console: Console) -> int:
    path, model, out = args.target, DEFAULT_MODEL if args.model is None else args.model, args.out
    if args.overrides:
        raise InvalidInput(f"--set {args.overrides[0]!r}: --set changes a spec; {path} is a data file")
    if encoding_name(model) is None:
        raise InvalidInput(f"--model {model!r}: no shipped tiktoken encoding for this model")
    if out is not None:
        make_dir(out, "--out")  # a folder that cannot be made is found before the checks run
    checks = run_checks(path, model)  # empty, non-UTF-8 or unreadable files: InvalidInput (exit 2)
    for line in summary_lines(checks):
        console.print(line, highlight=False, markup=False)
    if out is not None:
        console.print(f"checks: {_write_checks(checks, out)}", highlight=False, markup=False)
    if args.json:
        print_json(checks)
    return EXIT_INVALID if checks["format_errors"] else EXIT_OK


def _write_checks(checks: dict, out: Path) -> Path:
    """out/checks.json, written whole or not at all; a folder that cannot hold it is exit 3."""
    target = out / "checks.json"
    try:
        write_atomic(target, dumps(checks, indent=2) + "\n")
    except OSError as error:
        raise RuntimeFailure(f"--out {out}: cannot write checks.json: {error.strerror or error}") from None
    return target


def print_json(value: dict) -> None:
    """The only thing a command prints to stdout, so `specrun check --json … | jq` reads it whole."""
    sys.stdout.write(dumps(value, indent=2) + "\n")
    sys.stdout.flush()
