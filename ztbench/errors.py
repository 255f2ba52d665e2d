"""The one exception type that the CLI turns into a single line and exit code 2."""


class UserError(Exception):
    """Bad input from the user (file, argument, suite): printed as one line, exit code 2.

    The message must say what is wrong and where (file, row, key).
    """
