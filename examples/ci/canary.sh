#!/usr/bin/env bash
# Promote a canary with nothing but flagctl and a `ci` token: 5 → 25 → 50 → 100 %,
# each step refused if the environment moved under the pipeline (--if-version), each
# step waited for until every connected SDK instance has applied it (--wait), then
# watched with a health check. When a check fails, the flag is restored as it was
# before the promotion, and the script waits for the fleet to have the rollback.
#
#   FLAGD_URL=https://flags.example.com FLAGD_TOKEN=fd_… FLAGD_ENV=production \
#   FLAG=new-checkout HEALTH_CHECK='curl -fsS https://shop.example.com/healthz' \
#   examples/ci/canary.sh
#
# Settings (environment variables):
#   FLAG            the flag to promote (required)
#   HEALTH_CHECK    a shell command, exit 0 when healthy (required); it sees
#                   CANARY_PERCENT and CANARY_VERSION
#   VARIANT         the variant promoted (default: on)
#   STEPS           the percentages (default: "5 25 50 100")
#   SOAK            seconds to watch each step (default: 300); the check runs first
#                   right after the fleet has the step, then every CHECK_INTERVAL
#   CHECK_INTERVAL  seconds between checks during the soak (default: 30)
#   WAIT_TIMEOUT    how long the fleet may take to apply a step (default: 2m)
#   BASE_VERSION    the version the promotion starts from, e.g. the one approved
#                   (default: the current one)
#   RUN_ID          names the pipeline run in the audit log (default: local)
#
# Exit codes:
#   0  promoted to the last step
#   1  rolled back: a health check failed, or the fleet did not apply a step in time
#   3  the environment changed under the pipeline (someone else is acting): nothing
#      was overwritten and nothing was rolled back; a person decides
#   6  rolled back, but not every SDK instance applied the rollback within
#      WAIT_TIMEOUT (flagctl names them; `flagctl wait` to keep waiting)
#   other  flagctl's exit code (2 usage, 4 not found, 5 flagd unreachable,
#      7 the token refused)
set -uo pipefail

: "${FLAG:?set FLAG to the flag to promote}"
: "${HEALTH_CHECK:?set HEALTH_CHECK to a command that exits 0 when the service is healthy}"
VARIANT=${VARIANT:-on}
STEPS=${STEPS:-5 25 50 100}
SOAK=${SOAK:-300}
CHECK_INTERVAL=${CHECK_INTERVAL:-30}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-2m}
RUN_ID=${RUN_ID:-local}
env_name=${FLAGD_ENV:?set FLAGD_ENV to the environment}

log() { printf '%s canary %s: %s\n' "$(date -u +%H:%M:%S)" "$FLAG" "$*" >&2; }

base=${BASE_VERSION:-$(flagctl -q versions head)} || exit $?
version=$base
percent=0
log "starting from $env_name version $base"

# Restores the flag's definition as of $base, unless someone changed the environment
# since our last step (then their change stands and a person decides).
rollback() {
    log "ROLLING BACK: $1"
    flagctl restore "$FLAG" --from "$base" --if-version "$version" \
        --reason "canary $RUN_ID: $1; restoring $FLAG as of version $base" \
        --wait --timeout "$WAIT_TIMEOUT"
    local rc=$?
    case $rc in
        0) log "rolled back; every SDK instance has it"; exit 1 ;;
        3) log "not rolled back: $env_name changed under the pipeline; someone else is acting"; exit 3 ;;
        6) log "rolled back, but not every SDK instance has applied it (named above): check them, or flagctl wait"; exit 6 ;;
        *) log "the rollback failed (flagctl exit $rc): restore $FLAG --from $base by hand"; exit "$rc" ;;
    esac
}

healthy() {
    CANARY_PERCENT=$percent CANARY_VERSION=$version bash -c "$HEALTH_CHECK"
}

for percent in $STEPS; do
    out=$(flagctl -q rollout "$FLAG" --variant "$VARIANT" --percent "$percent" \
        --if-version "$version" --reason "canary $RUN_ID: $VARIANT to $percent%" \
        --wait --timeout "$WAIT_TIMEOUT")
    rc=$?
    # With -q a change prints its version, even when --wait then fails (exit 6).
    [[ $out =~ ^[0-9]+$ ]] && version=$out
    case $rc in
        0) log "$percent% is version $version, applied by every SDK instance" ;;
        6) rollback "the fleet did not apply $percent% within $WAIT_TIMEOUT" ;;
        1) log "flagd refused the $percent% step; stopping at the previous step"; exit 1 ;;
        3) log "stopped: $env_name moved past version $version under the pipeline; nothing overwritten"; exit 3 ;;
        *) log "stopped: flagctl exit $rc"; exit "$rc" ;;
    esac
    deadline=$((SECONDS + SOAK))
    while :; do
        healthy || rollback "the health check failed at $percent%"
        ((SECONDS >= deadline)) && break
        sleep "$CHECK_INTERVAL"
    done
    log "$percent% is healthy"
done
log "promoted: $VARIANT at ${percent}% in version $version"
