"""``python -m darkknowledge`` runs the command line."""

import sys

from darkknowledge.cli import main

if __name__ == "__main__":
    sys.exit(main())
