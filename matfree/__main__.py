"""``python -m matfree``: the command line (see :mod:`matfree.cli`)."""

import sys

from matfree.cli import main

if __name__ == "__main__":
    sys.exit(main())
