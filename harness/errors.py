"""The one exception type users see: a mistake they can fix, reported in one line."""


class UserError(Exception):
    """Bad input (search space, data, results directory, address).

    The CLI prints ``error: <message>`` and exits non-zero without a traceback, so
    the message must name the field or file, what was wrong and the allowed values.
    """
