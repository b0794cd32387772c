"""`python -m cm_media.cli` runs the command line (as torchrun does)."""

import sys

from cm_media.cli import main

sys.exit(main())
