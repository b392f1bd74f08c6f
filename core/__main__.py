"""``python -m nascore``: the ``nascore`` command, and what ``torchrun -m nascore ...`` starts on every rank."""
import sys

from .cli import main

sys.exit(main())
