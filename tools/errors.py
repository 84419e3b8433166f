"""The command line's one domain error: a user mistake, told without a traceback."""

import click


class FieldtrackError(click.ClickException):
    """A bad file, field, argument or setting: the message says what, where, and the fix.

    ``fieldtrack.tools.cli.main`` catches it once and prints ``error: <message>`` on
    stderr with exit code 2 (``--verbose`` re-raises it for the traceback). Each command
    module raises its own subclass, converting library errors at the command's edge.
    """

    exit_code = 2
