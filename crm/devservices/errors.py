"""The one exception type the dev-services tooling raises for expected failures."""

from __future__ import annotations


class DevServiceError(RuntimeError):
    """A local service could not be fetched, started, reached or stopped.

    The message is meant for a human: it says what failed and, where possible, what to
    do about it (what to install, which log to read; it often carries the log's tail).
    """
