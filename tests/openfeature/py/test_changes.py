"""Changes made through the REST API reach the official Python provider: the kill switch
(disable/enable) and a revert of the whole set, each seen as a
PROVIDER_CONFIGURATION_CHANGED event naming the flag, then in the next evaluation."""

import copy
import unittest

from fixture import CTX, ENV, FLAGS, close, connect, expected_metadata, make_provider, now_ms, reset, start_fixture, timing, to_context

TOGGLES = 10
REVERTS = 5


def reason(d) -> str:
    return getattr(d.reason, "value", d.reason)


def code(d):
    return getattr(d.error_code, "value", d.error_code)


class Changes:
    mode = ""

    @classmethod
    def setUpClass(cls):
        cls.flagd, cls.key, _ = start_fixture()
        try:
            # The provider's defaults otherwise (the RPC one caches STATIC answers).
            cls.provider = make_provider(cls.mode, cls.flagd, cls.key["secret"])
            cls.client, cls.recorder = connect(f"changes-{cls.mode}", cls.provider)
        except BaseException:
            cls.flagd.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.recorder.detach()
        close(cls.provider)
        cls.flagd.stop()

    def setUp(self):
        # A test that failed half-way may have left a flag disabled.
        reset(self.flagd, self.client, self.mode)

    def assert_names(self, ev, keys, summary):
        # The event names exactly the flags the version changed. RPC: flagd's
        # configuration_change names them; in-process: flagd-core diffs the whole set itself.
        self.assertEqual(sorted(ev["flags_changed"]), sorted(keys), summary)

    def test_kill_switch_toggles(self):
        flag = "toggle-flag"
        ctx = to_context(CTX)
        on = self.client.get_boolean_details(flag, False, ctx)
        self.assertEqual((on.value, on.variant, reason(on)), (True, "on", "TARGETING_MATCH"))
        for i in range(TOGGLES):
            for action in ("disable", "enable"):
                start = self.recorder.mark()
                t0 = now_ms()
                _, body, _ = self.flagd.api("POST", f"/environments/{ENV}/flags/{flag}/{action}", {"reason": f"compat {action} {i}"})
                self.assertTrue(body["changed"])
                ev = self.recorder.changed(flag, start)
                timing("py", self.mode, "kill-switch" if action == "disable" else "enable", ev["at"] - t0)
                self.assert_names(ev, [flag], self.recorder.summary(start))
                got = self.client.get_boolean_details(flag, False, ctx)
                ref = self.flagd.ofrep(flag, CTX, self.key["secret"])
                if action == "disable":
                    self.assertEqual((got.value, got.variant, reason(got), got.error_code), (False, None, "DISABLED", None))
                    self.assertEqual(ref["reason"], "DISABLED")
                else:
                    self.assertEqual((got.value, got.variant, reason(got), got.error_code), (True, "on", "TARGETING_MATCH", None))
                    self.assertEqual(ref["reason"], "TARGETING_MATCH")
                # The value and reason above show the change arrived. In-process metadata is
                # the set's and the flag's, no version; the RPC provider passes none on.
                self.assertEqual(ref["metadata"]["flagSetVersion"], body["version"])
                self.assertEqual(dict(got.flag_metadata), expected_metadata(self.mode, ref))
                self.assertNotIn("flagSetVersion", got.flag_metadata)

    def test_kill_switch_of_cached_static_flag(self):
        flag = "bool-static"
        for _ in range(2):
            d = self.client.get_boolean_details(flag, False)
            self.assertTrue(d.value)
            self.assertIn(reason(d), ("STATIC", "CACHED"))
        start = self.recorder.mark()
        t0 = now_ms()
        self.flagd.api("POST", f"/environments/{ENV}/flags/{flag}/disable", {"reason": "compat static"})
        ev = self.recorder.changed(flag, start)
        timing("py", self.mode, "kill-switch-static", ev["at"] - t0)
        self.assert_names(ev, [flag], self.recorder.summary(start))
        off = self.client.get_boolean_details(flag, False)
        self.assertEqual((off.value, reason(off)), (False, "DISABLED"))
        start = self.recorder.mark()
        self.flagd.api("POST", f"/environments/{ENV}/flags/{flag}/enable", {"reason": "compat static"})
        self.assert_names(self.recorder.changed(flag, start), [flag], self.recorder.summary(start))
        back = self.client.get_boolean_details(flag, False)
        self.assertEqual((back.value, back.variant, reason(back)), (True, "on", "STATIC"))

    def test_revert_whole_set(self):
        ctx = to_context(CTX)
        three = ["added-flag", "bool-static", "ref-flag"]
        for i in range(REVERTS):
            base = self.flagd.head()
            changed = copy.deepcopy(FLAGS)
            changed["flags"]["bool-static"]["defaultVariant"] = "off"
            del changed["flags"]["ref-flag"]
            changed["flags"]["added-flag"] = {"state": "ENABLED", "variants": {"x": "x-value", "y": "y-value"}, "defaultVariant": "y"}
            start = self.recorder.mark()
            t0 = now_ms()
            _, put, _ = self.flagd.api("PUT", f"/environments/{ENV}/flags", changed)
            self.assertEqual(sorted(put["changedFlags"]), three)
            ev = self.recorder.changed("bool-static", start)
            timing("py", self.mode, "import", ev["at"] - t0)
            self.assert_names(ev, three, self.recorder.summary(start))
            self.assertFalse(self.client.get_boolean_details("bool-static", True).value)
            self.assertEqual(self.client.get_string_details("added-flag", "none").value, "y-value")
            self.assertEqual(code(self.client.get_string_details("ref-flag", "none", ctx)), "FLAG_NOT_FOUND")

            start = self.recorder.mark()
            t0 = now_ms()
            _, rev, _ = self.flagd.api("POST", f"/environments/{ENV}/revert", {"version": base, "reason": f"compat revert {i}"})
            self.assertTrue(rev["changed"])
            ev = self.recorder.changed("bool-static", start)
            timing("py", self.mode, "revert", ev["at"] - t0)
            self.assert_names(ev, three, self.recorder.summary(start))
            s = self.client.get_boolean_details("bool-static", False)
            self.assertEqual((s.value, s.variant, reason(s)), (True, "on", "STATIC"))
            r = self.client.get_string_details("ref-flag", "none", ctx)
            self.assertEqual((r.value, r.variant, reason(r)), ("staff-view", "staff", "TARGETING_MATCH"))
            a = self.client.get_string_details("added-flag", "none")
            self.assertEqual((a.value, code(a)), ("none", "FLAG_NOT_FOUND"))
            # The old values above show the revert arrived.
            s_ref = self.flagd.ofrep("bool-static", {}, self.key["secret"])
            self.assertEqual(s_ref["metadata"]["flagSetVersion"], rev["version"])
            self.assertEqual(dict(s.flag_metadata), expected_metadata(self.mode, s_ref))


class InProcess(Changes, unittest.TestCase):
    mode = "in-process"


class Rpc(Changes, unittest.TestCase):
    mode = "rpc"


if __name__ == "__main__":
    unittest.main()
