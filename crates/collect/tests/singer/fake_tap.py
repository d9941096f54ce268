#!/usr/bin/env python3
"""A small Singer tap for haul's tests. Its config picks a behaviour:
normal (users 1..records, a STATE {"bookmark": id} every state_every records,
honouring --state), bad_lines, fail, hang."""
import argparse
import json
import sys
import time


def emit(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


USERS = {
    "type": "SCHEMA",
    "stream": "users",
    "key_properties": ["id"],
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": ["null", "string"]},
            "at": {"type": ["null", "string"], "format": "date-time"},
        },
    },
}


def user(id, at=None):
    return {"type": "RECORD", "stream": "users", "record": {"id": id, "name": f"user-{id}", "at": at or "2024-01-02T03:04:05Z"}}


def normal(config, state):
    emit(USERS)
    if config.get("second_stream"):
        emit({"type": "SCHEMA", "stream": "events", "schema": {"properties": {"event": {"type": "string"}}}})
    start = state.get("bookmark", 0) if state else 0
    for id in range(start + 1, config.get("records", 10) + 1):
        emit(user(id))
        if config.get("second_stream"):
            emit({"type": "RECORD", "stream": "events", "record": {"event": f"event-{id}"}})
        if id % config.get("state_every", 1) == 0:
            emit({"type": "STATE", "value": {"bookmark": id}})


def bad_lines():
    emit(user(0))
    emit(USERS)
    sys.stdout.write("this is not json\n")
    emit({"type": "BOGUS"})
    emit(user(1))
    emit(user(9, at="yesterday"))
    emit({"type": "ACTIVATE_VERSION", "stream": "users", "version": 1})
    emit(user(2))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--state")
    parser.add_argument("--catalog")
    args = parser.parse_args()
    with open(args.config) as file:
        config = json.load(file)
    state = None
    if args.state:
        with open(args.state) as file:
            state = json.load(file)
    behaviour = config.get("behaviour", "normal")
    if behaviour == "normal":
        normal(config, state)
    elif behaviour == "bad_lines":
        bad_lines()
    elif behaviour == "fail":
        emit(USERS)
        emit(user(1))
        print("boom: credentials rejected", file=sys.stderr)
        sys.exit(3)
    elif behaviour == "hang":
        emit(USERS)
        time.sleep(60)


main()
