"""The one exception type for user mistakes: the CLI prints it without a traceback and exits 1."""


class UserError(Exception):
    """Bad input the user can fix: say which file or record, what is wrong and what to do."""
