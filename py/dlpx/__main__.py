"""``python -m dlpx``: the dlpx command (see dlpx._cli)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
