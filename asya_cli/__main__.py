"""`python -m asya_cli ...`: the `asya` command without its console script (how `asya dev`
starts its own children, with the interpreter it runs on)."""

import sys

from asya_cli.main import main

__all__: list[str] = []

sys.exit(main())
