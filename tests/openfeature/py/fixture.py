"""The shared fixture of the Python suite, as the JavaScript one (js/fixture.mjs): a flagd
(the binary in $FLAGD_BIN) on random loopback ports with a fresh SQLite database, the flag
set of ../fixture/flags.json, an SDK key, OFREP as the reference; and the official
provider (openfeature-provider-flagd) in either mode, with a recorder of its events."""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

HERE = Path(__file__).resolve().parent
FIXTURE_DIR = HERE.parent / "fixture"
FLAGS = json.loads((FIXTURE_DIR / "flags.json").read_text())
CONTEXTS = json.loads((FIXTURE_DIR / "contexts.json").read_text())
ENV = "production"
MODES = ("in-process", "rpc")
CTX = CONTEXTS[0]

# The providers read FLAGD_HOST, FLAGD_PORT, FLAGD_CACHE, …; flagd reads FLAGD_LISTEN,
# FLAGD_DATABASE_URL, …: none of the caller's may leak into a test.
for _name in list(os.environ):
    if _name.startswith("FLAGD_") and _name != "FLAGD_BIN":
        del os.environ[_name]

# The provider and its evaluator log tracebacks for expected situations (a sem_ver of a
# missing attribute, a refused stream); VERBOSE=1 shows them.
logging.basicConfig(level=logging.DEBUG if os.environ.get("VERBOSE") else logging.CRITICAL)


# Every flagd started is killed when this process ends, however it ends (short of SIGKILL).
_live: set[subprocess.Popen] = set()
_dirs: set[Path] = set()


@atexit.register
def _kill_all() -> None:
    for p in list(_live):
        if p.poll() is None:
            p.kill()
    if not os.environ.get("KEEP_FLAGD_DIR"):
        for d in list(_dirs):
            shutil.rmtree(d, ignore_errors=True)


def _on_signal(signum, _frame):
    _kill_all()
    sys.exit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


def now_ms() -> float:
    return time.perf_counter() * 1000.0


def timing(client: str, mode: str, what: str, ms: float) -> None:
    """A line the runner collects into its timing table."""
    print(f"TIMING {client} {mode} {what} {ms:.1f}", flush=True)


def wait_for(what: str, check, timeout: float = 20.0, every: float = 0.005):
    """Polls `check()` until it returns a truthy value, or fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the last error is reported on timeout
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f": {last!r}" if last else ""))
        time.sleep(every)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_context(ctx: dict) -> EvaluationContext:
    return EvaluationContext(ctx.get("targetingKey"), {k: v for k, v in ctx.items() if k != "targetingKey"})


class Flagd:
    """A flagd process: start(), kill() (SIGKILL), restart() (same ports and database),
    stop(); api() for the REST API as the admin; ofrep() for the reference."""

    def __init__(self) -> None:
        self.bin = os.environ.get("FLAGD_BIN")
        if not self.bin:
            raise RuntimeError("FLAGD_BIN must name the flagd binary (e.g. target/debug/flagd)")
        self.dir = Path(tempfile.mkdtemp(prefix="flagd-of-py-"))
        _dirs.add(self.dir)
        self.admin_token = "fd_" + secrets.token_urlsafe(32)
        self.log_file = self.dir / "flagd.log"
        self.proc: subprocess.Popen | None = None
        self.http_port = self.grpc_port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "Flagd":
        last = None
        for _ in range(5):
            self.http_port, self.grpc_port = free_port(), free_port()
            if self.http_port == self.grpc_port:
                continue
            try:
                self._spawn()
                return self
            except Exception as e:  # noqa: BLE001 - a port clash: new ports
                last = e
                self.kill()
        raise last or RuntimeError("flagd did not start")

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGD_")}
        env["FLAGD_ADMIN_TOKEN"] = self.admin_token
        env.setdefault("RUST_LOG", "info")
        args = [
            self.bin,
            "--database-url", f"sqlite://{self.dir / 'flagd.db'}?mode=rwc",
            "--listen", f"127.0.0.1:{self.http_port}",
            "--grpc-listen", f"127.0.0.1:{self.grpc_port}",
        ]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc = self.proc
        _live.add(proc)
        needle = f"gRPC (OpenFeature flagd providers): 127.0.0.1:{self.grpc_port}"

        def ready():
            if proc.poll() is not None:
                raise RuntimeError(f"flagd exited ({proc.returncode}):\n{self.log_tail()}")
            if needle not in self.log_file.read_text(errors="replace"):
                return False
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        try:
            wait_for(f"flagd ready on {self.http_port}/{self.grpc_port}", ready, every=0.025)
        except AssertionError as e:
            raise RuntimeError(f"{e}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        _live.discard(proc)
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, sig: int = signal.SIGKILL) -> None:
        """kill -9 (or SIGTERM), then the same binary on the same ports and database."""
        self.kill(sig)
        deadline = time.monotonic() + 20
        while True:
            try:
                self._spawn()
                return
            except Exception:
                self.kill()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self.kill()
        if not os.environ.get("KEEP_FLAGD_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)
        _dirs.discard(self.dir)

    def api(self, method: str, path: str, body=None, expect=None) -> tuple[int, object, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base}/api/v1{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                status, text, headers = r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, text, headers = e.code, e.read().decode(), dict(e.headers)
        ok = status in ([expect] if isinstance(expect, int) else expect) if expect else 200 <= status < 300
        if not ok:
            raise AssertionError(f"{method} {path}: {status} {text}")
        return status, (json.loads(text) if text else None), {k.lower(): v for k, v in headers.items()}

    def ofrep(self, key: str, context: dict, sdk_key: str) -> dict:
        req = urllib.request.Request(
            f"{self.base}/ofrep/v1/evaluate/flags/{urllib.request.quote(key, safe='')}",
            data=json.dumps({"context": context}).encode(), method="POST",
            headers={"Authorization": f"Bearer {sdk_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return {"status": r.status, **json.loads(r.read())}
        except urllib.error.HTTPError as e:
            return {"status": e.code, **json.loads(e.read())}

    def create_sdk_key(self, env: str = ENV) -> dict:
        _, body, _ = self.api("POST", f"/environments/{env}/sdk-keys", expect=201)
        return {"id": body["sdkKey"]["id"], "secret": body["secret"], "name": body["sdkKey"]["name"]}

    def revoke_sdk_key(self, key_id: str) -> None:
        self.api("DELETE", f"/tokens/{key_id}", expect=204)

    def load_flags(self, doc=None, env: str = ENV) -> int:
        _, body, _ = self.api("PUT", f"/environments/{env}/flags", doc if doc is not None else FLAGS)
        return body["version"]

    def head(self, env: str = ENV) -> int:
        _, _, headers = self.api("GET", f"/environments/{env}/flags")
        return int(headers["x-flag-set-version"])

    def fleet(self, env: str = ENV) -> dict:
        return self.api("GET", f"/environments/{env}/fleet")[1]


def start_fixture() -> tuple[Flagd, dict, int]:
    """flagd started, the fixture's flags loaded, an SDK key made."""
    flagd = Flagd()
    try:
        flagd.start()
        version = flagd.load_flags()
        key = flagd.create_sdk_key()
        return flagd, key, version
    except BaseException:
        print(flagd.log_tail())
        flagd.stop()
        raise


def key_credentials(secret: str) -> grpc.ChannelCredentials:
    """The SDK key as call metadata `authorization: Bearer …` on a plaintext loopback
    channel (call credentials need a "secure" channel: local credentials are one)."""
    return grpc.composite_channel_credentials(
        grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
        grpc.metadata_call_credentials(lambda _ctx, cb: cb((("authorization", f"Bearer {secret}"),), None)),
    )


def make_provider(mode: str, flagd: Flagd, secret: str | None, auth: str = "metadata", **options) -> FlagdProvider:
    """The provider for `mode`; the key as metadata (the default) or as the authority."""
    kw = dict(
        host="127.0.0.1",
        port=flagd.grpc_port,
        resolver_type=ResolverType.IN_PROCESS if mode == "in-process" else ResolverType.RPC,
        # The default (500 ms) is how long initialization may take: too short for CI.
        deadline_ms=5000,
        # How long the provider waits before it opens a failed stream again.
        retry_backoff_max_ms=500,
        retry_grace_period=2,
    )
    if secret is not None:
        if auth == "metadata":
            kw["channel_credentials"] = key_credentials(secret)
        else:
            kw["default_authority"] = secret
    kw.update(options)
    return FlagdProvider(**kw)


class Recorder:
    """Every event of one client, with the time it was seen."""

    TYPES = (
        ProviderEvent.PROVIDER_READY,
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_STALE,
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
    )
    NAMES = {
        ProviderEvent.PROVIDER_READY: "Ready",
        ProviderEvent.PROVIDER_ERROR: "Error",
        ProviderEvent.PROVIDER_STALE: "Stale",
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED: "ConfigurationChanged",
    }

    def __init__(self, client) -> None:
        self.client = client
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.handlers = []
        for t in self.TYPES:
            def h(details, t=t):
                with self.lock:
                    self.events.append({
                        "type": self.NAMES[t], "at": now_ms(),
                        "flags_changed": list(details.flags_changed) if details.flags_changed is not None else None,
                        "message": details.message,
                        "error_code": details.error_code,
                    })
            client.add_handler(t, h)
            self.handlers.append((t, h))

    def mark(self) -> int:
        with self.lock:
            return len(self.events)

    def after(self, start: int) -> list[dict]:
        with self.lock:
            return list(self.events[start:])

    def next(self, what: str, pred, start: int = 0, timeout: float = 20.0) -> dict:
        return wait_for(what, lambda: next((e for e in self.after(start) if pred(e)), None), timeout=timeout, every=0.002)

    def changed(self, key: str, start: int, timeout: float = 20.0) -> dict:
        return self.next(
            f"a ConfigurationChanged event naming {key}",
            lambda e: e["type"] == "ConfigurationChanged" and key in (e["flags_changed"] or []),
            start, timeout,
        )

    def summary(self, start: int = 0) -> str:
        out = []
        for e in self.after(start):
            s = e["type"]
            if e["flags_changed"]:
                s += f"[{','.join(e['flags_changed'])}]"
            if e["message"]:
                s += f"({e['message']})"
            out.append(s)
        return " ".join(out)

    def detach(self) -> None:
        for t, h in self.handlers:
            self.client.remove_handler(t, h)


def connect(domain: str, provider: FlagdProvider):
    """set_provider_and_wait in its own domain; the client and its recorder."""
    client = api.get_client(domain)
    recorder = Recorder(client)
    api.set_provider_and_wait(provider, domain=domain)
    return client, recorder


_closed: set[int] = set()


def close(provider: FlagdProvider) -> None:
    """Shuts the provider down, once (its domain is never used again)."""
    if id(provider) in _closed:
        return
    _closed.add(id(provider))
    try:
        provider.shutdown()
    except Exception as e:  # noqa: BLE001 - a provider that never connected
        logging.getLogger(__name__).debug("shutdown: %r", e)


def without_version(metadata: dict | None) -> dict:
    """OFREP's metadata without `flagSetVersion`: what an in-process provider reports."""
    return {k: v for k, v in (metadata or {}).items() if k != "flagSetVersion"}


def expected_metadata(mode: str, ref: dict) -> dict:
    """The evaluation metadata the Python provider reports for an OFREP answer `ref`:
    in-process, the set's and the flag's metadata only (flagd keeps `flagSetVersion` out of
    the synced set's metadata); RPC, nothing (provider 0.6.1 drops flagd's metadata)."""
    return without_version(ref["metadata"]) if mode == "in-process" else {}


def _reason(d) -> str:
    return getattr(d.reason, "value", d.reason)


def _code(d):
    return getattr(d.error_code, "value", d.error_code)


def reset(flagd: Flagd, client, mode: str) -> int:
    """Puts the fixture's flag set back and waits until the provider evaluates it: the
    flags the change tests alter have their fixture answers again. No Python answer names
    the version (in-process metadata has no flagSetVersion, the RPC provider drops
    metadata), so the values tell."""
    if mode not in MODES:
        raise ValueError(f"reset: unknown mode {mode!r}")
    flagd.load_flags()
    head = flagd.head()
    ctx = to_context(CTX)

    def at_fixture():
        toggle = client.get_boolean_details("toggle-flag", False, ctx)
        static = client.get_boolean_details("bool-static", False)
        ref = client.get_string_details("ref-flag", "none", ctx)
        added = client.get_string_details("added-flag", "none")
        targeted = client.get_boolean_details("bool-targeted", False, ctx)
        return (
            (toggle.value, _reason(toggle)) == (True, "TARGETING_MATCH")
            and static.value is True and _reason(static) in ("STATIC", "CACHED")
            and (ref.value, _reason(ref)) == ("staff-view", "TARGETING_MATCH")
            and _code(added) == "FLAG_NOT_FOUND"
            and (targeted.value, _reason(targeted)) == (True, "TARGETING_MATCH")
            and "flagSetVersion" not in (targeted.flag_metadata or {})
        )

    wait_for(f"the provider ({mode}) to evaluate the fixture's set (version {head})", at_fixture)
    return head
