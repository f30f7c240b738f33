#!/usr/bin/env python3
"""Writes the raw seed inputs of the three fuzz targets into OUT/<target>/.

Sources: the flag files of the flagd testbed (../shared/conformance/flagd-testbed beside
the repository), examples/flags, hand-written stream frames (docs/protocol.md) and
contexts (examples/flags/cases.jsonl plus edge cases). The committed corpus is these
seeds minimized with `cargo fuzz cmin` and then fuzzed (see run.sh):

    python3 sdk/core/fuzz/seeds.py /tmp/seeds
"""
import glob
import hashlib
import json
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "../../.."))
TESTBED = os.path.join(ROOT, "../shared/conformance/flagd-testbed")


def write(out, target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def compact(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def flag_files():
    files = sorted(glob.glob(os.path.join(TESTBED, "flags/*.json")))
    files += sorted(glob.glob(os.path.join(TESTBED, "evaluator/flags/*.json")))
    files += sorted(glob.glob(os.path.join(ROOT, "examples/flags/*.json")))
    if not files:
        sys.exit(f"no flag files found (testbed expected at {TESTBED})")
    return files


CONTEXTS = [
    {},
    {"targetingKey": "user-1"},
    {"targetingKey": "user-1", "email": "ann@example.com", "country": "NO", "plan": "pro"},
    {"targetingKey": 42, "email": "ballmer@macrosoft.com"},
    {"user": {"name": "jon", "id": 7}, "version": "1.0.0", "num": 123, "tier": "gold"},
    {"appVersion": "4.3.1-rc.1+build.5", "age": 18.5, "tags": ["beta-1", "x"]},
    {"time": 1700000000, "color": "yellow", "id": "1", "hashing_input": {"a": [1, 2]}},
    {"variant": "x", "scores": [1, 2, -3.5], "name": "ab", "beta": True, "n": None},
    {"big": 18446744073709551615, "neg": -9223372036854775808, "f": 1e308, "e": "\u00e9\U0001f600"},
    {f"attr{i}": i for i in range(20)},
]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/seeds"
    docs = []
    for path in flag_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        write(out, "flag_set", text)
        doc = json.loads(text)
        docs.append(doc)
        flags = doc.get("flags", {})
        items = flags.items() if isinstance(flags, dict) else []
        evaluators = doc.get("$evaluators")
        # Each flag alone (with the shared evaluators it may reference): small inputs
        # that the fuzzer mutates quickly.
        for key, flag in items:
            one = {"flags": {key: flag}}
            if evaluators:
                one["$evaluators"] = evaluators
            write(out, "flag_set", compact(one))
    # A flag set with a context after a NUL byte, and the flags-as-array form.
    with open(os.path.join(ROOT, "examples/flags/checkout.json"), encoding="utf-8") as f:
        checkout = json.load(f)
    with open(os.path.join(ROOT, "examples/flags/cases.jsonl"), encoding="utf-8") as f:
        cases = [json.loads(line) for line in f if line.strip()]
    for case in cases:
        write(out, "context", compact(case["context"]))
        if case["flag"] not in checkout["flags"]:
            continue
        one = {"$evaluators": checkout["$evaluators"],
               "flags": {case["flag"]: checkout["flags"][case["flag"]]}}
        write(out, "flag_set", compact(one) + "\0" + compact(case["context"]))
    as_array = {"flags": [dict(flag, key=k) for k, flag in checkout["flags"].items()]}
    write(out, "flag_set", compact(as_array))
    for c in CONTEXTS:
        write(out, "context", compact(c))
    for c in ["[]", "null", "\"user\"", "{\"targetingKey\":\"a\",\"targetingKey\":1}"]:
        write(out, "context", c)

    # Stream frames (docs/protocol.md).
    small = {"flags": {"f": checkout["flags"]["new-checkout"]},
             "$evaluators": checkout["$evaluators"]}
    frames = [
        {"type": "snapshot", "version": 1, "document": small},
        {"type": "snapshot", "version": 3, "document": checkout},
        {"type": "delta", "from": 1, "version": 2, "changes": [
            {"kind": "flag", "key": "f", "definition": checkout["flags"]["banner"]},
            {"kind": "flag", "key": "g", "definition": None},
            {"kind": "evaluator", "key": "e", "definition": {"==": [{"var": "x"}, 1]}},
            {"kind": "top", "key": "metadata", "definition": {"flagSetId": "s"}}]},
        {"type": "delta", "from": 2, "version": 3, "restores": 1, "changes": [
            {"kind": "flag", "key": "f", "definition": None},
            {"kind": "evaluator", "key": "e", "definition": None},
            {"kind": "top", "key": "flags", "definition": {}}]},
        {"type": "restore", "from": 3, "version": 4, "restores": 1},
        {"type": "ping"},
        {"type": "pong"},
        {"type": "hello", "instance": "i-1", "sdk": "flagd-sdk-rust/0.1.0", "host": "web-1",
         "labels": {"service": "checkout"}, "version": 3},
        {"type": "hello", "instance": "i-2", "sdk": "s", "version": None},
        {"type": "ack", "version": 4},
    ]
    for frame in frames:
        write(out, "wire_frame", compact(frame))
    for doc in docs[:4]:
        write(out, "wire_frame", compact({"type": "snapshot", "version": 9, "document": doc}))


if __name__ == "__main__":
    main()
