#!/usr/bin/env bash
# The rollback story end to end: start flagd, start a service that uses the SDK, ramp
# a flag, break it (kill switch), revert a whole version, and watch the service follow
# each change live, with no redeploy. Every change is made with flagctl and waited for
# (--wait) until the service's SDK has applied it.
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
# flagctl, as the responder and the pipeline use it.
export PATH=$PWD/target/release:$PATH FLAGD_URL=$flagd_url FLAGD_TOKEN=$FLAGD_ADMIN_TOKEN FLAGD_ENV=production

cargo build --release -q -p flagd -p flagctl --bins
cargo build --release -q -p flagd-examples --example checkout-service

echo "== starting flagd"
./target/release/flagd --listen 127.0.0.1:18080 --database-url "sqlite://$work/flagd.db?mode=rwc" >"$work/flagd.log" 2>&1 &
until curl -sf $flagd_url/readyz >/dev/null; do sleep 0.1; done

echo "== creating the flag: 5% of users get the new checkout"
cat >"$work/flags.json" <<'JSON'
{"flags": {"new-checkout": {
  "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
  "targeting": {"fractional": [["on", 5], ["off", 95]]}}}}
JSON
flagctl import "$work/flags.json" --reason "the new checkout, as a 5% canary"
key=$(flagctl -q sdk-keys create --name checkout-service)

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
survey
echo "== CI ramps to 50%, based on version 1, and waits until every SDK instance has it"
flagctl rollout new-checkout --variant on --percent 50 --if-version 1 --reason "canary 50%" --wait
survey
echo "== and to 100%"
flagctl rollout new-checkout --variant on --percent 100 --if-version 2 --reason "canary 100%" --wait
survey
echo "== incident: the new checkout fails; the responder flips the kill switch"
flagctl disable new-checkout --reason "checkout 5xx spike" --wait
survey
echo "== revert production to version 1 (5%)"
flagctl revert --to 1 --reason "back to the known-good canary" --wait
survey
echo "== the fleet view: every instance on the new version"
flagctl fleet
echo "== the history"
flagctl versions list
echo "== the audit log"
flagctl audit --limit 6
