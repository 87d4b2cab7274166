"""`python -m embed_inference` runs the server, as the console script does."""

import sys

from .cli import main

sys.exit(main())
