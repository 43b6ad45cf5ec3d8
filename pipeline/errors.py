"""The one exception type the CLI turns into a one-line message (no traceback)."""


class DepthmaskError(Exception):
    """A problem the user can fix: bad option, bad input file, incomplete dataset.

    The message names the file or option, says what is wrong and, where there is one, the fix.
    """
