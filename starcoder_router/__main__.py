"""`python -m starcoder_router`: the `starcoder-router` command."""

import sys

from ._cli import main

sys.exit(main())
