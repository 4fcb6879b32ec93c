"""The base of every error that a user caused and that deserves one clear line, not a traceback."""


class LookoutError(Exception):
    """An expected failure: bad input, a missing file, no network. ``str(error)`` is the one line.

    The CLI prints it as ``lookout: error: <line>`` and exits with ``exit_code``.
    """

    exit_code = 2
