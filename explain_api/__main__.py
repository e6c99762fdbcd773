"""``python -m explain_api``: the same as ``glimpse api``."""

from __future__ import annotations

import argparse
import sys

from explain_api.cli import configure_api, run_api


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explain_api", description="Run the Glimpse explain API.")
    configure_api(parser)
    return run_api(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
