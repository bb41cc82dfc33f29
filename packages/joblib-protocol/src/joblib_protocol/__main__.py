"""`python -m joblib_protocol schema`: print the JSON Schemas of the protocol."""

from __future__ import annotations

import argparse
import json
import sys

from joblib_protocol.schema import json_schemas


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(prog="python -m joblib_protocol")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("schema", help="print the JSON Schema of every model and event")
    parser.parse_args(argv)
    json.dump(json_schemas(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
