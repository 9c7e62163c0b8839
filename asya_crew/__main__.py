"""`python -m asya_crew sink|sump|join|pause`: the same as `asya crew sink|sump|join|pause`."""

from __future__ import annotations

import sys

from asya_crew import main

USAGE = f"usage: python -m asya_crew {{{'|'.join(main.ROLES)}}}"

if __name__ == "__main__":
    args = sys.argv[1:]
    if args in (["-h"], ["--help"]):
        print(USAGE)
        sys.exit(0)
    if len(args) != 1:
        print(USAGE, file=sys.stderr)
        sys.exit(main.EXIT_BAD_CONFIG)
    sys.exit(main.run(args[0]))
