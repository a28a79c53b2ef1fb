"""``python -m lfhelpers``: see :mod:`lfhelpers.cli`."""

import sys

from .cli import main

sys.exit(main())
