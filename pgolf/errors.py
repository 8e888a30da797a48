"""The one exception type the CLI turns into a clean message instead of a traceback."""


class PgolfError(Exception):
    """A user-facing error: bad input, a missing file, an invalid flag.

    Messages name the file, field or flag at fault, so the CLI prints them as they are.
    """
