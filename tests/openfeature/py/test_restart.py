"""flagd killed (kill -9) or stopped (SIGTERM) and started again on the same ports and the
same database: the official Python provider goes Stale (or Error), reconnects by itself
(Ready or ConfigurationChanged), and a change made after the restart reaches it."""

import signal
import unittest

from openfeature.provider import ProviderStatus

ROUNDS = 3

from fixture import CTX, ENV, close, connect, expected_metadata, make_provider, now_ms, reset, start_fixture, timing, to_context, wait_for


def reason(d) -> str:
    return getattr(d.reason, "value", d.reason)


class Restart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.flagd, cls.key, _ = start_fixture()

    @classmethod
    def tearDownClass(cls):
        cls.flagd.stop()

    def restart_case(self, mode: str, sig: int):
        name = "kill" if sig == signal.SIGKILL else "sigterm"
        provider = make_provider(mode, self.flagd, self.key["secret"])
        try:
            client, recorder = connect(f"restart-{mode}-{name}", provider)
            for _round in range(ROUNDS):
                reset(self.flagd, client, mode)
                ctx = to_context(CTX)
                before = client.get_boolean_details("toggle-flag", False, ctx)
                self.assertEqual((before.value, reason(before)), (True, "TARGETING_MATCH"))

                start = recorder.mark()
                self.flagd.kill(sig)
                recorder.next("Stale or Error after flagd went away", lambda e: e["type"] in ("Stale", "Error"), start)
                print(f"py {mode} {name}: {recorder.summary(start)}", flush=True)
                if mode == "in-process":
                    # The last set received keeps being evaluated while flagd is away.
                    held = client.get_boolean_details("toggle-flag", False, ctx)
                    self.assertEqual((held.value, held.variant), (True, "on"))

                start = recorder.mark()
                t0 = now_ms()
                self.flagd.restart()
                back = recorder.next(
                    "Ready (or ConfigurationChanged) after the restart",
                    lambda e: e["type"] in ("Ready", "ConfigurationChanged"), start,
                )
                timing("py", mode, f"reconnect-after-{name}", back["at"] - t0)
                wait_for("provider status READY", lambda: client.get_provider_status() == ProviderStatus.READY)
                print(f"py {mode} after restart: {recorder.summary(start)}", flush=True)

                start = recorder.mark()
                t1 = now_ms()
                _, body, _ = self.flagd.api("POST", f"/environments/{ENV}/flags/toggle-flag/disable", {"reason": "after restart"})
                ev = recorder.changed("toggle-flag", start)
                timing("py", mode, "change-after-restart", ev["at"] - t1)
                got = client.get_boolean_details("toggle-flag", False, ctx)
                self.assertEqual((got.value, got.variant, reason(got)), (False, None, "DISABLED"))
                self.assertEqual(ev["flags_changed"], ["toggle-flag"], recorder.summary(start))
                # DISABLED above shows the change arrived; no Python answer names the version.
                ref = self.flagd.ofrep("toggle-flag", CTX, self.key["secret"])
                self.assertEqual(ref["metadata"]["flagSetVersion"], body["version"])
                self.assertEqual(dict(got.flag_metadata), expected_metadata(mode, ref))
            recorder.detach()
        finally:
            close(provider)
            # Whatever happened, flagd runs for the next test.
            if self.flagd.proc is None:
                self.flagd.restart()

    def test_in_process_kill9(self):
        self.restart_case("in-process", signal.SIGKILL)

    def test_in_process_sigterm(self):
        self.restart_case("in-process", signal.SIGTERM)

    def test_rpc_kill9(self):
        self.restart_case("rpc", signal.SIGKILL)

    def test_rpc_sigterm(self):
        self.restart_case("rpc", signal.SIGTERM)


if __name__ == "__main__":
    unittest.main()
