"""`python -m lbgen` runs the CLI."""

import sys

from lbgen.cli import main

sys.exit(main())
