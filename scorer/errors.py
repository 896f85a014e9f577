"""Errors of the score stage. Each is a :class:`UserInputError`: the CLI prints it as one line, exit code 2.

Dataset folder problems (missing folder, no ``accelbench.json``, unknown schema version) are raised by
:func:`accelbench.dataset.read_manifest` as :class:`accelbench.dataset.DatasetError`.
"""

from accelbench.errors import UserInputError


class ScoreError(UserInputError):
    """The score stage cannot run with this input."""


class UnknownClipModelError(ScoreError):
    """An open_clip model name or pretrained tag that open_clip does not know."""


class NoImagesError(ScoreError):
    """A dataset without a single image to score (no row with status 'ok')."""
