"""User-facing errors: each says what is wrong and how to fix it, and is raised before any heavy work."""

import sys
from typing import Callable


class SlimbenchError(Exception):
    """Base class; the CLI prints these without a traceback and exits with status 2."""


class ConfigError(SlimbenchError):
    """The configuration names something unknown or a value out of range."""


class DataNotFoundError(SlimbenchError):
    """A dataset or checkpoint is missing locally and may not be downloaded."""


class CorruptFileError(SlimbenchError):
    """A data file, saved model or metrics file is truncated or altered: the message names the file and the fix."""


class UnsafeInputError(SlimbenchError):
    """Something would execute code from a model folder or write outside the results folder."""


def exit_status(prog: str, command: Callable[[], None]) -> int:
    """Run a command-line action: 0 when it succeeds; a SlimbenchError is one line on stderr and status 2."""
    try:
        command()
    except SlimbenchError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped early (`slimbench plan | head`): not an error of ours
        sys.stderr.close()
        return 0
    return 0
