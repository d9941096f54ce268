#!/usr/bin/env python3
"""A small Singer target for haul's tests. It keeps records in memory until a
STATE message, then appends them to the config's `path` and echoes the state.
With behaviour `fail` it reads one line and exits with status 2."""
import argparse
import json
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    with open(args.config) as file:
        config = json.load(file)
    if config.get("behaviour") == "fail":
        sys.stdin.readline()
        print("target exploded", file=sys.stderr)
        sys.exit(2)
    pending = []
    for line in sys.stdin:
        message = json.loads(line)
        if message["type"] == "RECORD":
            pending.append(message["record"])
        elif message["type"] == "STATE":
            with open(config["path"], "a") as output:
                for record in pending:
                    output.write(json.dumps(record) + "\n")
            pending = []
            sys.stdout.write(json.dumps(message["value"]) + "\n")
            sys.stdout.flush()


main()
