"""`CLIError`: a user-facing failure printed as one line, never as a traceback."""


class CLIError(Exception):
    """Raised by a subcommand for a bad flag, file or state; the message names the culprit."""
