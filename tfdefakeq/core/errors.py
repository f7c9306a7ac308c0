"""The one exception type for problems the user can fix (bad files, bad arguments)."""


class UserError(Exception):
    """A user-facing error: its message is one line that names the file or argument and the problem."""
