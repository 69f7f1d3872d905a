"""``python -m ppvae.cli``."""

import sys

from ppvae.cli.entry import main

if __name__ == "__main__":  # worker processes that re-import the main module must not run the command again
    sys.exit(main())
