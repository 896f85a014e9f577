"""The one base class of every error caused by the user's input (a manifest, a dataset folder, an option).

The CLI prints such an error as one ``error: ...`` line and exits with code 2; anything else is a bug and
keeps its traceback.
"""


class UserInputError(ValueError):
    """Bad input, described in one line."""
