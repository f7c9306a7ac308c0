"""The shared shape of every `python -m tfdefakeq.<verb>` (after ai-edge-quantizer's aeq.py)."""

from __future__ import annotations

import sys

from tfdefakeq.errors import UserError


def run_cli(verb: str, parse_args, main, argv=None) -> None:
    """Runs `main(parse_args(argv))`; a UserError becomes one stderr line and exit code 2."""
    try:
        code = main(parse_args(argv))
    except UserError as e:
        print(f"tfdefakeq {verb}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"tfdefakeq {verb}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)
