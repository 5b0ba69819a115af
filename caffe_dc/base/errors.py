"""User-facing errors.

Anything raised as a DCError is a problem with the user's input or
environment, not a bug: the CLI prints its message on one line and exits
with status 2, without a traceback.
"""


class DCError(Exception):
    """Base class for errors that the CLI reports as one clear line."""


class InputError(DCError):
    """A missing or malformed input file, or arguments that do not fit it."""


class FormatError(DCError):
    """A compressed blob (ours or the authors' .net) that is truncated or corrupt."""


class InternalError(Exception):
    """A broken invariant inside caffe-dc (a bug, not the user's input): the CLI exits 1 and asks for a report.

    Deliberately not a DCError, so that it is never mistaken for bad input (exit 2)."""
