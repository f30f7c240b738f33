"""Typed evaluations through the official Python flagd provider, in-process and RPC, for
every flag of the fixture and every context, compared with OFREP's answers."""

import unittest

from openfeature.contrib.provider.flagd.config import CacheType

from fixture import (
    CONTEXTS, CTX, FLAGS, MODES, close, connect, make_provider, start_fixture, to_context, without_version,
)

ALL_CONTEXTS = CONTEXTS + [{}]
FRACTIONAL = ("string-fractional", "string-fractional-default-bucketing")

# Where the provider's own evaluator is known to bucket differently from flagd (OFREP):
# each is checked to differ in value and variant only, and printed as DEVIATION.
KNOWN_DEVIATIONS = [
    {
        "mode": "in-process",
        "applies": lambda flag, ctx: flag in FRACTIONAL,
        "why": "openfeature-flagd-core 2.0.0 implements fractional v3 (murmur3 of the canonical CBOR of the "
               "bucketing value; the shorthand hashes [flagKey, targetingKey]); flagd hashes the UTF-8 string "
               "(fractional v2, flagd-testbed 3.9.0)",
    },
]


def flag_type(flag: str) -> str:
    values = list(FLAGS["flags"][flag]["variants"].values())
    if isinstance(values[0], bool):
        return "boolean"
    if isinstance(values[0], str):
        return "string"
    if isinstance(values[0], dict):
        return "object"
    return "float" if any(isinstance(v, float) for v in values) else "integer"


DEFAULTS = {"boolean": False, "string": "code-default", "integer": -999, "float": -9.5, "object": {"code": "default"}}


def getter(client, type_: str):
    return getattr(client, f"get_{type_}_details")


def reason(d) -> str:
    return getattr(d.reason, "value", d.reason)


def code(d):
    return getattr(d.error_code, "value", d.error_code)


class Evaluate:
    """Mixed into one TestCase per mode."""

    mode = ""

    @classmethod
    def setUpClass(cls):
        cls.flagd, cls.key, cls.version = start_fixture()
        try:
            # The cache off: every answer is the server's (the cache has its own test).
            cls.provider = make_provider(cls.mode, cls.flagd, cls.key["secret"], cache=CacheType.DISABLED)
            cls.client, cls.recorder = connect(f"eval-{cls.mode}", cls.provider)
        except BaseException:
            cls.flagd.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        close(cls.provider)
        cls.flagd.stop()

    def test_every_flag_and_context_as_ofrep(self):
        problems, compared, deviations = [], 0, 0
        for flag in FLAGS["flags"]:
            t = flag_type(flag)
            dflt = DEFAULTS[t]
            for ctx in ALL_CONTEXTS:
                got = getter(self.client, t)(flag, dflt, to_context(ctx))
                ref = self.flagd.ofrep(flag, ctx, self.key["secret"])
                self.assertEqual(ref["status"], 200, ref)
                self.assertEqual(ref["metadata"]["flagSetVersion"], self.version, ref)
                compared += 1
                have = {"value": got.value, "variant": got.variant, "reason": reason(got), "error": code(got)}
                want = {"value": ref.get("value", dflt), "variant": ref.get("variant"), "reason": ref["reason"], "error": None}
                if self.mode == "in-process":
                    # Python's RPC provider drops flag metadata (its own choice): not compared there.
                    have["metadata"] = dict(got.flag_metadata)
                    # In-process: the set's and the flag's metadata, no flagSetVersion (see the README).
                    want["metadata"] = without_version(ref["metadata"])
                if have == want:
                    continue
                where = f"{flag} {ctx}"
                known = next((d for d in KNOWN_DEVIATIONS if d["mode"] == self.mode and d["applies"](flag, ctx)), None)
                if known:
                    deviations += 1
                    print(f"DEVIATION py {self.mode} {where}: provider {have['variant']}, OFREP {want['variant']} ({known['why']})", flush=True)
                    self.assertEqual(have["reason"], want["reason"], where)
                    self.assertEqual(have.get("metadata"), want.get("metadata"), where)
                    self.assertIn(have["variant"], FLAGS["flags"][flag]["variants"], where)
                    self.assertEqual(have["value"], FLAGS["flags"][flag]["variants"][have["variant"]], where)
                    continue
                problems.append(f"{where}\n    provider {have}\n    OFREP    {want}")
        print(f"py {self.mode}: {compared} evaluations compared with OFREP, {deviations} known deviations", flush=True)
        self.assertEqual(problems, [], f"{len(problems)} evaluations differ from OFREP:\n" + "\n".join(problems))

    def test_reasons(self):
        cases = [
            ("bool-static", "boolean", CTX, (True, "on", "STATIC")),
            ("bool-targeted", "boolean", CTX, (True, "on", "TARGETING_MATCH")),
            # Targeting returned null: the default variant, reason DEFAULT.
            ("float-flag", "float", {"targetingKey": "x"}, (0.25, "low", "DEFAULT")),
            # No default variant: the caller's default, no variant.
            ("no-default-flag", "string", CTX, ("code-default", None, "DEFAULT")),
            ("disabled-flag", "boolean", CTX, (False, None, "DISABLED")),
            ("object-flag", "object", CTX, (FLAGS["flags"]["object-flag"]["variants"]["premium"], "premium", "TARGETING_MATCH")),
            ("ref-flag", "string", CTX, ("staff-view", "staff", "TARGETING_MATCH")),
            ("semver-flag", "boolean", CTX, (True, "new", "TARGETING_MATCH")),
            ("starts-with-flag", "string", CTX, ("admin-console", "admin", "TARGETING_MATCH")),
            ("int-flag", "integer", CTX, (250, "medium", "TARGETING_MATCH")),
            # An integer flag read as a float is a float (flagd's typing).
            ("int-flag", "float", CTX, (250.0, "medium", "TARGETING_MATCH")),
        ]
        for flag, t, ctx, want in cases:
            with self.subTest(flag=flag, type=t):
                d = getter(self.client, t)(flag, DEFAULTS[t], to_context(ctx))
                self.assertEqual((d.value, d.variant, reason(d)), want)
                self.assertIsNone(d.error_code)

    def test_flag_metadata(self):
        d = self.client.get_boolean_details("bool-targeted", False, to_context(CTX))
        if self.mode == "rpc":
            # The Python RPC provider does not pass flagd's metadata on.
            self.assertEqual(dict(d.flag_metadata), {})
            return
        # The set's and the flag's metadata; flagd sends no flagSetVersion to in-process providers.
        want = {**FLAGS["metadata"], **FLAGS["flags"]["bool-targeted"]["metadata"]}
        self.assertEqual(dict(d.flag_metadata), want)
        # A flag without metadata of its own: the set's metadata alone.
        self.assertEqual(dict(self.client.get_boolean_details("bool-static", False).flag_metadata), FLAGS["metadata"])

    def test_flag_not_found(self):
        for t in DEFAULTS:
            with self.subTest(type=t):
                d = getter(self.client, t)("no-such-flag", DEFAULTS[t], to_context(CTX))
                self.assertEqual(code(d), "FLAG_NOT_FOUND")
                self.assertEqual(reason(d), "ERROR")
                self.assertEqual(d.value, DEFAULTS[t])
                self.assertIsNone(d.variant)
        self.assertEqual(self.flagd.ofrep("no-such-flag", CTX, self.key["secret"])["errorCode"], "FLAG_NOT_FOUND")

    def test_type_mismatch(self):
        cases = [
            ("string-fractional", "boolean"),
            ("bool-targeted", "string"),
            ("object-flag", "float"),
            ("int-flag", "object"),
            ("float-flag", "string"),
            # A float with a fraction is not an integer.
            ("float-flag", "integer"),
            ("bool-static", "integer"),
        ]
        for flag, t in cases:
            with self.subTest(flag=flag, type=t):
                d = getter(self.client, t)(flag, DEFAULTS[t], to_context(CTX))
                self.assertEqual(code(d), "TYPE_MISMATCH", d)
                self.assertEqual(reason(d), "ERROR")
                self.assertEqual(d.value, DEFAULTS[t])


class InProcess(Evaluate, unittest.TestCase):
    mode = "in-process"


class Rpc(Evaluate, unittest.TestCase):
    mode = "rpc"

    def test_cache_static_answers(self):
        provider = make_provider("rpc", self.flagd, self.key["secret"], cache=CacheType.LRU)
        try:
            client, _ = connect("eval-rpc-cache", provider)
            first = client.get_boolean_details("bool-static", False)
            self.assertEqual((first.value, first.variant, reason(first)), (True, "on", "STATIC"))
            second = client.get_boolean_details("bool-static", False)
            self.assertEqual((second.value, second.variant, reason(second)), (True, "on", "CACHED"))
            for _ in range(2):
                self.assertEqual(reason(client.get_boolean_details("bool-targeted", False, to_context(CTX))), "TARGETING_MATCH")
        finally:
            close(provider)


assert set(MODES) == {InProcess.mode, Rpc.mode}

if __name__ == "__main__":
    unittest.main()
