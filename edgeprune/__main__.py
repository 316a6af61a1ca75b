"""``python -m edgeprune`` (and ``torchrun -m edgeprune build ...``): the command line."""

import sys

from .cli import main

sys.exit(main())
