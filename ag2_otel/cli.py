"""``ag2-otel``: ``demo`` runs a traced multi-agent scenario with no API key; ``doctor`` checks the configuration."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ag2-otel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a tool-use chat and a group chat on a scripted model, traced into "
                                            "MLflow")
    demo.add_argument("--ag2x", action="store_true",
                      help="the calculator in AG2 1.x (import ag2) instead; the default when only AG2 1.x is installed")
    commands.add_parser("doctor", help="print the resolved configuration (secrets masked) and check the endpoints")
    args = parser.parse_args(argv)
    from .config import ConfigError

    try:
        if args.command == "demo":
            from .demo import run
            from .package import ag2x_version, check_ag2

            return run(ag2x=args.ag2x or (not check_ag2().supported and ag2x_version() is not None))
        from .doctor import run as doctor

        return doctor()
    except ConfigError as exc:
        print(f"ag2-otel: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
