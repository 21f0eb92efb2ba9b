"""`python -m kubenas_trainer`: see cli.py and README.md."""

import sys

from kubenas_trainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
