"""The one exception type that means "the user did something wrong".

The CLI turns it into a single line on stderr and exit code 1; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: the message says what is wrong and how to fix it."""
