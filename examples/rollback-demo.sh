#!/usr/bin/env bash
# The rollback story end to end: start flagd, start a service that uses the SDK, ramp
# a flag, break it (kill switch), revert a whole version, and watch the service follow
# each change live, with no redeploy.
#
#   examples/rollback-demo.sh
#
# Uses ports 18080 (flagd) and 13000 (the service) on 127.0.0.1 and a temporary
# database; stops everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export FLAGD_ADMIN_TOKEN=fd_demo-admin-token
flagd_url=http://127.0.0.1:18080
api=$flagd_url/api/v1
auth=(-H "Authorization: Bearer $FLAGD_ADMIN_TOKEN")

cargo build --release -q -p flagd --bin flagd
cargo build --release -q -p flagd-examples --example checkout-service

echo "== starting flagd"
./target/release/flagd --listen 127.0.0.1:18080 --database-url "sqlite://$work/flagd.db?mode=rwc" >"$work/flagd.log" 2>&1 &
until curl -sf $flagd_url/readyz >/dev/null; do sleep 0.1; done

echo "== creating the flag: 5% of users get the new checkout"
curl -sf "${auth[@]}" -X PUT $api/environments/production/flags/new-checkout -d '{
  "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
  "targeting": {"fractional": [["on", 5], ["off", 95]]}}' >/dev/null
key=$(curl -sf "${auth[@]}" -X POST $api/environments/production/sdk-keys -d '{"name": "checkout-service"}' | sed 's/.*"secret":"\([^"]*\)".*/\1/')

echo "== starting the checkout service (SDK in-process)"
FLAGD_URL=$flagd_url FLAGD_SDK_KEY=$key LISTEN=127.0.0.1:13000 ./target/release/examples/checkout-service >"$work/service.log" 2>&1 &
until curl -sf http://127.0.0.1:13000/healthz >/dev/null; do sleep 0.1; done

survey() {
    # How many of 200 users get the new checkout, and which flag-set version served them.
    local new=0 version=
    for u in $(seq 1 200); do
        r=$(curl -sf "http://127.0.0.1:13000/checkout?user=user-$u")
        [[ $r == *'"checkout":"new"'* ]] && new=$((new + 1))
        version=$(sed 's/.*"flagSetVersion":\([0-9]*\).*/\1/' <<<"$r")
    done
    echo "   $new of 200 users on the new checkout (flag set version $version)"
}
wait_version() {
    until [[ $(curl -sf "http://127.0.0.1:13000/checkout?user=probe") == *"\"flagSetVersion\":$1"* ]]; do sleep 0.01; done
}

survey
echo "== CI ramps to 50%"
curl -sf "${auth[@]}" -X POST -H 'If-Match: 1' $api/environments/production/flags/new-checkout/rollout -d '{"variant": "on", "percent": 50}' >/dev/null
wait_version 2; survey
echo "== and to 100%"
curl -sf "${auth[@]}" -X POST $api/environments/production/flags/new-checkout/rollout -d '{"variant": "on", "percent": 100}' >/dev/null
wait_version 3; survey
echo "== incident: the new checkout fails; kill switch"
curl -sf "${auth[@]}" -X POST $api/environments/production/flags/new-checkout/disable -d '{"reason": "checkout 5xx spike"}' >/dev/null
wait_version 4; survey
echo "== revert production to version 1 (5%)"
curl -sf "${auth[@]}" -X POST $api/environments/production/revert -d '{"version": 1, "reason": "back to the known-good canary"}' >/dev/null
wait_version 5; survey
echo "== the fleet view: every instance on the new version"
curl -sf "${auth[@]}" $api/environments/production/fleet | sed 's/"instances".*/.../'
echo
echo "== the audit log"
curl -sf "${auth[@]}" "$api/audit?environment=production&limit=5" | grep -o '"action":"[^"]*","environment":"[^"]*","target":"[^"]*"\(,"reason":"[^"]*"\)\?'
