"""The base class of the errors a user can fix (input, config, workdir, run state)."""


class UserError(Exception):
    """Bad input, config, workdir or run state. The command-line tools print the message as one
    line, without a traceback, and exit with status 1."""
