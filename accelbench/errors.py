"""The two kinds of error the CLI reports as one ``error: ...`` line instead of a traceback.

* :class:`UserInputError`: the user's input (a manifest, a dataset folder, an option) is wrong; exit code 2,
  nothing was run.
* :class:`RunError`: the environment stopped a run (disk full, read-only or failing storage, no network);
  exit code 1, what was written before stays readable.

Anything else is a bug and keeps its traceback.
"""


class UserInputError(ValueError):
    """Bad input, described in one line."""


class RunError(RuntimeError):
    """The environment stopped the run, described in one line."""
