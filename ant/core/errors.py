"""User-facing errors: the command line prints them as one line and exits with code 2."""

from __future__ import annotations


class AntError(Exception):
    """Bad input from the user (a recipe typo, a missing file, an unknown plugin...).

    The message is one line that names the problem and the fix. The CLI prints it without a
    traceback and exits with :attr:`exit_code`.
    """

    exit_code = 2
    label = "Error"


class Diverged(AntError):
    """Training produced NaN or infinite values; nothing non-finite was saved (exit code 3)."""

    exit_code = 3


class Preempted(AntError):
    """Training stopped on a signal after saving a checkpoint (exit code 143, as SIGTERM's
    default; schedulers requeue on it and ``--resume`` continues)."""

    exit_code = 143
    label = "Stopped"


def one_line(exc: BaseException) -> str:
    """The last meaningful line of an error message.

    Errors raised in DataLoader worker processes come back wrapped in a message that carries the
    worker's traceback; the user needs only the final line, without the exception's class name.
    """
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    last = lines[-1].strip()
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return last[len(prefix) :] if last.startswith(prefix) else last
