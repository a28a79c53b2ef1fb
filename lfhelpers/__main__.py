"""``python -m lfhelpers``: see :mod:`lfhelpers.cli`."""

import sys

from lfhelpers.cli import main

sys.exit(main())
