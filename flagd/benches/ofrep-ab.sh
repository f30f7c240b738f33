#!/usr/bin/env bash
# OFREP single-flag throughput of two flagd builds and the bare HTTP stack, in
# alternating rounds on loopback (docs/benchmarks.md, section 4): this machine's speed
# drifts by tens of percent within minutes, so builds are only compared within a round.
#   [PERF=1] flagd/benches/ofrep-ab.sh OLD_FLAGD NEW_FLAGD [rounds] [seconds]
# For example, the previous commit's build against this one's:
#   git stash; cargo build --release -p flagd --bin flagd; cp target/release/flagd /tmp/flagd-old
#   git stash pop; cargo build --release -p flagd --bin flagd
#   flagd/benches/ofrep-ab.sh /tmp/flagd-old target/release/flagd 4 6
# Each build serves a temporary SQLite file with the 100 flags of ofrep-wrk.sh; wrk
# (Debian package) runs 2 threads and 64 keep-alive connections against each in turn,
# then against flagd/examples/http-ceiling.rs (the same HTTP stack answering a fixed body).
# PERF=1 adds each server's CPU and context switches per request (perf stat).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
old=$1 new=$2 rounds=${3:-4} secs=${4:-6}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p flagd --example http-ceiling
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
admin=fd_bench-$RANDOM$RANDOM$RANDOM
dirs=() pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "${dirs[@]}"' EXIT
# start BINARY -> "port dir pid" of a flagd serving the bench flags (run in a
# subshell: the caller records the directory and the process)
start() {
    local dir port
    dir=$(mktemp -d) port=$(free_port)
    FLAGD_ADMIN_TOKEN=$admin "$1" serve --listen 127.0.0.1:$port \
        --database-url "sqlite://$dir/flagd.db?mode=rwc" --log-format json >"$dir/flagd.log" 2>&1 &
    local pid=$!
    python3 - "http://127.0.0.1:$port" "$admin" <<'PY' >"$dir/key"
import json, sys, time, urllib.request
base, admin = sys.argv[1], sys.argv[2]
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/readyz")
        break
    except Exception:
        time.sleep(0.1)
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
    cat >"$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"context": {"targetingKey": "user-4711", "country": "NO", "plan": "pro"}}'
wrk.headers["Authorization"] = "Bearer $(cat "$dir/key")"
wrk.headers["Content-Type"] = "application/json"
LUA
    echo "$port $dir $pid"
}
read -r old_port old_dir old_pid < <(start "$old")
read -r new_port new_dir new_pid < <(start "$new")
dirs+=("$old_dir" "$new_dir") pids+=("$old_pid" "$new_pid")
ceiling_port=$(free_port)
target/release/examples/http-ceiling 127.0.0.1:$ceiling_port &
ceiling_pid=$!
pids+=($ceiling_pid)
for _ in $(seq 100); do curl -sf -X POST http://127.0.0.1:$ceiling_port/ofrep/v1/evaluate/flags/x >/dev/null && break; sleep 0.1; done
rate() { wrk -t2 -c64 -d${secs}s -s "$1/post.lua" "http://127.0.0.1:$2/ofrep/v1/evaluate/flags/flag-042" | awk '/Requests\/sec/{print $2}'; }
echo "| round | old | new | ceiling | old / ceiling | new / ceiling |"
echo "|---:|---:|---:|---:|---:|---:|"
for r in $(seq "$rounds"); do
    o=$(rate "$old_dir" "$old_port") n=$(rate "$new_dir" "$new_port") c=$(rate "$new_dir" "$ceiling_port")
    python3 -c "import sys; o,n,c=map(float,sys.argv[2:]); print(f'| {sys.argv[1]} | {o:,.0f} | {n:,.0f} | {c:,.0f} | {o/c:.0%} | {n/c:.0%} |')" "$r" "$o" "$n" "$c"
done
# PERF=1: then one more run of each server under `perf stat`, for what a request costs
# it in CPU (user and system) and in context switches (docs/benchmarks.md, section 4).
[ "${PERF:-}" = 1 ] || exit 0
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
echo
echo "| server | requests | CPU per request | context switches per request |"
echo "|---|---:|---:|---:|"
for s in "old $old_dir $old_port $old_pid" "new $new_dir $new_port $new_pid" "ceiling $new_dir $ceiling_port $ceiling_pid"; do
    read -r name dir port pid <<<"$s"
    stat=$(mktemp)
    dirs+=("$stat")
    perf stat -x, -e context-switches,task-clock -p "$pid" -o "$stat" -- sleep "$secs" &
    counting=$!
    n=$(wrk -t2 -c64 -d${secs}s -s "$dir/post.lua" "http://127.0.0.1:$port/ofrep/v1/evaluate/flags/flag-042" | awk '/ requests in /{print $1}')
    wait "$counting"
    python3 - "$name" "$n" "$stat" <<'PY'
import sys
name, n, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
counts = {}
for line in open(path):
    f = line.strip().split(",")
    if len(f) > 2 and f[0][:1].isdigit():
        counts[f[2]] = float(f[0])
cpu = counts["task-clock"] * 1000 / n
print(f"| {name} | {n:,.0f} | {cpu:.1f} µs | {counts['context-switches'] / n:.3f} |")
PY
done
