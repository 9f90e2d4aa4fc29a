"""The one error type of ganflow, in a leaf module every layer may import.

A `GanflowError` is a problem phrased as one line that names the problem and
the fix. It carries its exit code, and whether retrying can help is a
property of its class, not of where it is caught: the CLI and the flow each
catch it in one place, and Prefect's retry policy asks `retryable`.
"""

from __future__ import annotations

import threading

EXIT_FAILURE, EXIT_USAGE = 1, 2
# Set when the user stops the process (Ctrl-C, SIGTERM, SIGHUP): from then on nothing is retried.
# A terminal's Ctrl-C also reaches the servers this process started in its process group (Prefect's
# temporary API among them), so what fails next fails because of the stop, not by chance.
STOPPING = threading.Event()


class GanflowError(Exception):
    """A problem only the user can fix (missing bucket, access denied, invalid weights file)."""

    exit_code = EXIT_FAILURE
    retryable = False


class UsageError(GanflowError):
    """Invalid command-line usage or configuration."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError, ValueError):
    """An invalid configuration file, key or value."""


class TransientError(GanflowError):
    """A fault that may pass (an outage, throttling, a lost worker): worth a retry."""

    retryable = True


class TrainingFailed(TransientError):
    """Training failed after Ray's own restarts; a retry resumes from the last checkpoint."""


def is_retryable(err: BaseException) -> bool:
    """Anything that is not a GanflowError is unexpected, so it is treated as transient; nothing
    is retried once the process is stopping."""
    if STOPPING.is_set():
        return False
    return err.retryable if isinstance(err, GanflowError) else isinstance(err, Exception)
