"""`python -m sindiffusion ...` (also what `torchrun -m sindiffusion ...` runs)."""

import sys

from .cli import main

sys.exit(main())
