#!/usr/bin/env bash
# OFREP throughput on loopback with keep-alive (docs/benchmarks.md, section 4):
#   flagd/benches/ofrep-wrk.sh [seconds]
# Builds flagd (release), starts it on a temporary SQLite file, loads 100 flags with
# targeting and fractional splits, and runs wrk (Debian package `wrk`) against the
# single-flag and the bulk endpoint. flagd and wrk share this machine's cores.
# PROFILE=1 also records 4 s of flagd under the single-flag load with perf
# (/tmp/ofrep.perf; `perf report -i /tmp/ofrep.perf`); PROFILE_PATH= profiles the bulk
# endpoint instead. CEILING=1 also measures flagd/examples/http-ceiling.rs: the same
# HTTP stack answering a fixed body, the best flagd could do on this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p flagd --bin flagd
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=fd_bench-$RANDOM$RANDOM
FLAGD_ADMIN_TOKEN=$admin target/release/flagd serve --listen 127.0.0.1:$port \
    --database-url "sqlite://$dir/flagd.db?mode=rwc" --log-format json >"$dir/flagd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
base=http://127.0.0.1:$port
for _ in $(seq 100); do curl -sf $base/readyz >/dev/null && break; sleep 0.1; done
python3 - "$base" "$admin" >"$dir/key" <<'PY'
import json, sys, urllib.request
base, admin = sys.argv[1], sys.argv[2]
def call(method, path, body):
    req = urllib.request.Request(base + "/api/v1" + path, method=method, data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + admin})
    return json.load(urllib.request.urlopen(req))
flags = {}
for i in range(100):
    flags[f"flag-{i:03}"] = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
        "targeting": {"if": [{"in": [{"var": "country"}, ["NO", "SE", "DK"]]},
                             {"fractional": [["on", 25], ["off", 75]]}, "off"]}}
call("PUT", "/environments/production/flags", {"flags": flags})
print(call("POST", "/environments/production/sdk-keys", {})["secret"])
PY
key=$(cat "$dir/key")
cat >"$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"context": {"targetingKey": "user-4711", "country": "NO", "plan": "pro"}}'
wrk.headers["Authorization"] = "Bearer $key"
wrk.headers["Content-Type"] = "application/json"
LUA
echo "== single flag: POST /ofrep/v1/evaluate/flags/flag-042 (${secs}s, 2 threads, 64 connections)"
[ -n "${PROFILE:-}" ] && (sleep 2; perf record -g -p $pid -o /tmp/ofrep.perf -- sleep 4 >/dev/null 2>&1) &
wrk -t2 -c64 -d${secs}s --latency -s "$dir/post.lua" $base/ofrep/v1/evaluate/flags${PROFILE_PATH-/flag-042} \
    | grep -E "Requests/sec|Latency|  50%|  99%|Non-2xx"
echo "== bulk, 100 flags: POST /ofrep/v1/evaluate/flags (${secs}s, 2 threads, 64 connections)"
wrk -t2 -c64 -d${secs}s --latency -s "$dir/post.lua" $base/ofrep/v1/evaluate/flags \
    | grep -E "Requests/sec|Latency|  50%|  99%|Non-2xx"
if [ -n "${CEILING:-}" ]; then
    cargo build --release -q -p flagd --example http-ceiling
    cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    target/release/examples/http-ceiling 127.0.0.1:$cport &
    cpid=$!
    trap 'kill $pid $cpid 2>/dev/null; wait $pid $cpid 2>/dev/null; rm -rf "$dir"' EXIT
    for _ in $(seq 100); do curl -sf -X POST http://127.0.0.1:$cport/ofrep/v1/evaluate/flags/x >/dev/null && break; sleep 0.1; done
    echo "== ceiling: the same HTTP stack answering a fixed body (${secs}s, 2 threads, 64 connections)"
    wrk -t2 -c64 -d${secs}s --latency -s "$dir/post.lua" http://127.0.0.1:$cport/ofrep/v1/evaluate/flags/flag-042 \
        | grep -E "Requests/sec|Latency|  50%|  99%|Non-2xx"
fi
