"""``python -m newsbias``: the same as the ``newsbias`` command."""

import sys

from .cli import main

sys.exit(main())
