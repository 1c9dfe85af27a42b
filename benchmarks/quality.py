"""Quality benchmark on Places50 beside SinGAN, GPNN, GPDM; see `sindiffusion.bench` and --help."""

import sys

from sindiffusion.bench import main

if __name__ == "__main__":
    sys.exit(main())
