#!/usr/bin/env bash
# How long a responder's or pipeline's change takes with --wait (docs/benchmarks.md,
# section 5):
#   flagd/benches/flagctl-wait.sh [changes] [instances]
# Builds flagd, flagctl and the checkout-service example (release), starts flagd on a
# temporary SQLite file and `instances` services (each an SDK instance), then flips a
# kill switch `changes` times with `flagctl --json disable|enable --wait` and prints the
# percentiles of the whole command (process start, the change, waiting for every
# instance's ack) and of the wait alone (from flagd's answer until the last ack seen).
set -euo pipefail
cd "$(dirname "$0")/../.."
changes=${1:-100}
instances=${2:-3}
cargo build --release -q -p flagd -p flagctl --bins
cargo build --release -q -p flagd-examples --example checkout-service
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
export FLAGD_URL=http://127.0.0.1:$port FLAGD_TOKEN=fd_bench-secret-$RANDOM$RANDOM FLAGD_ENV=production
export PATH=$PWD/target/release:$PATH
FLAGD_ADMIN_TOKEN=$FLAGD_TOKEN flagd --listen 127.0.0.1:$port \
    --database-url "sqlite://$dir/flagd.db?mode=rwc" >"$dir/flagd.log" 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "$FLAGD_URL/readyz" >/dev/null && break; sleep 0.1; done
cat >"$dir/flags.json" <<'JSON'
{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
  "defaultVariant": "off", "targeting": {"fractional": [["on", 5], ["off", 95]]}}}}
JSON
flagctl -q import "$dir/flags.json" >/dev/null
key=$(flagctl -q sdk-keys create --name bench)
for i in $(seq "$instances"); do
    FLAGD_SDK_KEY=$key LISTEN=127.0.0.1:$(free_port) target/release/examples/checkout-service \
        >"$dir/service-$i.log" 2>&1 &
done
connected() { flagctl --json fleet | python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])'; }
for _ in $(seq 300); do [[ $(connected) == "$instances" ]] && break; sleep 0.1; done
flagctl wait --timeout 30s
python3 - "$changes" "$instances" <<'PY'
import json, subprocess, sys, time
changes, instances = int(sys.argv[1]), int(sys.argv[2])
whole, wait = [], []
for i in range(changes):
    t = time.perf_counter()
    r = subprocess.run(["flagctl", "--json", "disable" if i % 2 == 0 else "enable", "new-checkout",
                        "--reason", "bench", "--wait", "--timeout", "10s"], capture_output=True, text=True)
    whole.append((time.perf_counter() - t) * 1000)
    fleet = json.loads(r.stdout)["fleet"]
    if r.returncode != 0 or not fleet["converged"] or fleet["total"] != instances:
        sys.exit(f"change {i}: {r.returncode} {r.stdout} {r.stderr}")
    wait.append(fleet["waitedSeconds"] * 1000)
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]
print(f"{changes} kill-switch changes with --wait, {instances} SDK instances:")
for name, xs in (("whole command", whole), ("wait for acks", wait)):
    print(f"  {name:14} p50 {pct(xs, 50):6.2f} ms  p90 {pct(xs, 90):6.2f} ms  p99 {pct(xs, 99):6.2f} ms  max {max(xs):6.2f} ms")
PY
