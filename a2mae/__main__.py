"""``python -m a2mae`` is the ``a2mae`` command."""

import sys

from a2mae.cli import main

sys.exit(main())
