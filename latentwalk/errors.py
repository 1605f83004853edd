"""Errors the CLI turns into one line on stderr and an exit code."""

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class LatentwalkError(Exception):
    """A failure to report to the user as one line, without a traceback."""

    exit_code = EXIT_FAILURE


class BadInput(LatentwalkError):
    """The user asked for something that cannot be done: bad option, file or model name."""

    exit_code = EXIT_USAGE
