"""SDK keys and selectors with the official Python provider: an unknown key, no key or
another environment's selector is refused (the provider never becomes ready); a key
revoked while the provider streams closes its stream."""

import unittest

from openfeature.provider import ProviderStatus

from fixture import (
    CTX, ENV, MODES, close, connect, make_provider, now_ms, start_fixture, timing, to_context, wait_for,
)
from openfeature import api


def reason(d) -> str:
    return getattr(d.reason, "value", d.reason)


def code(d):
    return getattr(d.error_code, "value", d.error_code)


class Keys(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.flagd, cls.key, _ = start_fixture()

    @classmethod
    def tearDownClass(cls):
        cls.flagd.stop()

    def refused(self, mode, secret, status=(ProviderStatus.ERROR,), **options):
        """set_provider_and_wait raises; the client is in `status`; an evaluation errors."""
        # A refused provider waits its whole deadline before it gives up (unless the code is fatal).
        options.setdefault("deadline_ms", 1500)
        provider = make_provider(mode, self.flagd, secret, **options)
        domain = f"refused-{mode}-{id(provider)}"
        client = api.get_client(domain)
        t0 = now_ms()
        try:
            with self.assertRaises(Exception) as raised:
                api.set_provider_and_wait(provider, domain=domain)
            print(f"py {mode} {sorted(options)}: refused after {now_ms() - t0:.0f} ms: {type(raised.exception).__name__}: {raised.exception}", flush=True)
            self.assertIn(client.get_provider_status(), status)
            d = client.get_boolean_details("toggle-flag", False, to_context(CTX))
            self.assertEqual((d.value, reason(d)), (False, "ERROR"))
            self.assertIsNotNone(d.error_code)
            return raised.exception, d
        finally:
            close(provider)

    def test_unknown_key(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.refused(mode, "fdsdk_" + "x" * 43)

    def test_unknown_key_unauthenticated_fatal(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                _, d = self.refused(mode, "fdsdk_" + "y" * 43, status=(ProviderStatus.FATAL,), fatal_status_codes=["UNAUTHENTICATED"])
                self.assertEqual(code(d), "PROVIDER_FATAL")

    def test_no_key(self):
        for mode in MODES:
            with self.subTest(mode=mode):
                self.refused(mode, None)

    def test_selector_of_another_environment(self):
        # In-process: the sync stream is refused. RPC: the event stream is refused too
        # (the Python provider sends its selector on every call).
        for mode in MODES:
            with self.subTest(mode=mode):
                self.refused(mode, self.key["secret"], selector="staging", fatal_status_codes=["PERMISSION_DENIED"],
                             status=(ProviderStatus.FATAL,))

    def test_selectors_naming_the_key_environment(self):
        for mode in MODES:
            for selector in ("production", "environment=production", "flagSetId=production"):
                with self.subTest(mode=mode, selector=selector):
                    provider = make_provider(mode, self.flagd, self.key["secret"], selector=selector)
                    try:
                        client, _ = connect(f"selector-{mode}-{selector}", provider)
                        d = client.get_boolean_details("bool-targeted", False, to_context(CTX))
                        self.assertEqual((d.value, d.variant, reason(d)), (True, "on", "TARGETING_MATCH"))
                    finally:
                        close(provider)

    def test_key_as_default_authority(self):
        # The in-process provider sets grpc.default_authority: flagd reads the key from it.
        provider = make_provider("in-process", self.flagd, self.key["secret"], auth="authority")
        try:
            client, _ = connect("authority-in-process", provider)
            d = client.get_boolean_details("bool-targeted", False, to_context(CTX))
            self.assertEqual((d.value, d.variant, reason(d)), (True, "on", "TARGETING_MATCH"))
        finally:
            close(provider)
        # The RPC provider (0.6.1) ignores default_authority: no key reaches flagd.
        err, _ = self.refused("rpc", self.key["secret"], auth="authority")
        print(f"py rpc default_authority: {type(err).__name__} (the RPC provider does not apply default_authority)", flush=True)

    def revoke_case(self, mode, fatal: bool):
        key = self.flagd.create_sdk_key()
        options = {"fatal_status_codes": ["UNAUTHENTICATED"]} if fatal else {}
        provider = make_provider(mode, self.flagd, key["secret"], **options)
        try:
            client, recorder = connect(f"revoke-{mode}-{fatal}-{key['id']}", provider)
            d = client.get_boolean_details("bool-targeted", False, to_context(CTX))
            self.assertEqual((d.value, d.variant), (True, "on"))

            def mine():
                return [i for i in self.flagd.fleet()["instances"] if i["keyName"] == key["name"]]

            wait_for("the provider in the fleet", mine)
            start = recorder.mark()
            t0 = now_ms()
            self.flagd.revoke_sdk_key(key["id"])
            # flagd ends the stream (UNAUTHENTICATED) and forgets the instance at once.
            wait_for("the provider gone from the fleet", lambda: not mine())
            if fatal:
                ev = recorder.next("Error after the revocation", lambda e: e["type"] == "Error", start)
                timing("py", mode, "revoke", ev["at"] - t0)
                self.assertEqual(client.get_provider_status(), ProviderStatus.FATAL)
            if mode == "rpc":
                # Every evaluation is refused now (UNAUTHENTICATED: GENERAL, or FATAL).
                d = client.get_boolean_details("bool-targeted", False, to_context(CTX))
                self.assertEqual((d.value, reason(d)), (False, "ERROR"))
            print(f"py {mode} revoked (fatal={fatal}): events {recorder.summary(start) or '(none)'}, status {client.get_provider_status()}", flush=True)
            self.assertFalse(any(e["type"] == "Ready" for e in recorder.after(start)), "never Ready again")
            recorder.detach()
        finally:
            close(provider)

    def test_revoked_key_in_process(self):
        self.revoke_case("in-process", fatal=False)

    def test_revoked_key_rpc(self):
        self.revoke_case("rpc", fatal=False)

    def test_revoked_key_in_process_fatal(self):
        for _ in range(3):
            self.revoke_case("in-process", fatal=True)

    def test_revoked_key_rpc_fatal(self):
        for _ in range(3):
            self.revoke_case("rpc", fatal=True)


if __name__ == "__main__":
    unittest.main()
