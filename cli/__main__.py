"""``python -m nascore.cli``: the ``nascore`` command."""
import sys

from nascore.cli import main

sys.exit(main())
