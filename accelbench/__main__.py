"""``python -m accelbench``: the same as the ``accelbench`` command."""

from accelbench.cli import main

main()
