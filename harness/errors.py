"""The one exception type users see: a mistake they can fix, reported in one line."""


class UserError(Exception):
    """Bad input (search space, data, results directory, address).

    The CLI prints ``error: <message>`` and exits non-zero without a traceback, so
    the message must name the field or file, what was wrong and the allowed values.
    """


def run_reporting_user_errors(main) -> int:
    """``main()``'s exit status, or 2 with the one-line ``error: ...`` for a UserError: the benchmark scripts'
    entry points, so a missing dataset reads as the CLI says it, not as a traceback."""
    import sys  # lazy: this module stays import-free for the rooms that only raise

    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
