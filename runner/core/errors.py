"""Errors that map to the CLI's exit codes.

0 ok, 1 a gate failed, 2 invalid spec/data/template, 3 runtime or provider failure.
Each carries one line for the user; tracebacks are for bugs, not for bad input.
"""

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_INVALID = 2
EXIT_RUNTIME = 3


class SpecrunError(Exception):
    exit_code = EXIT_RUNTIME


class InvalidInput(SpecrunError):
    """Bad spec, dataset or template: found before anything is loaded or spent."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class RuntimeFailure(SpecrunError):
    """The model, a provider or the file system failed while running."""

    exit_code = EXIT_RUNTIME
