#!/usr/bin/env bash
# The OpenFeature compatibility suite: the official flagd providers (npm and PyPI), in
# in-process and RPC mode, against the flagd binary in $FLAGD_BIN. Installs what it needs
# when missing (npm ci; a venv with requirements.txt), runs the JavaScript and the Python
# suites, and prints a table of the change-to-event times they measured.
#
#   FLAGD_BIN=target/debug/flagd tests/openfeature/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
dir=tests/openfeature

: "${FLAGD_BIN:?FLAGD_BIN must name the flagd binary, e.g. FLAGD_BIN=target/debug/flagd}"
case "$FLAGD_BIN" in /*) ;; *) FLAGD_BIN="$root/$FLAGD_BIN" ;; esac
[ -x "$FLAGD_BIN" ] || { echo "FLAGD_BIN=$FLAGD_BIN is not an executable" >&2; exit 2; }
export FLAGD_BIN
# The providers read FLAGD_HOST, FLAGD_PORT, …, flagd reads FLAGD_LISTEN, …: none of the
# caller's reach the tests.
while read -r name; do
    [ "$name" = FLAGD_BIN ] || unset "$name"
done < <(compgen -e | grep '^FLAGD_' || true)

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
debian_install() {
    echo "installing $* (Debian packages) for the OpenFeature suite"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v node >/dev/null 2>&1 || debian_install nodejs npm

# npm packages, from the committed lock file (again when it changed).
lock_sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$dir/node_modules/.compat-lock" 2>/dev/null)" != "$lock_sum" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    echo "$lock_sum" > "$dir/node_modules/.compat-lock"
fi

# A venv with the pinned Python packages (again when requirements.txt changed).
venv="$dir/.venv"
req_sum=$(sha256sum "$dir/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$venv/.compat-requirements" 2>/dev/null)" != "$req_sum" ]; then
    if [ ! -x "$venv/bin/python" ]; then
        command -v python3 >/dev/null 2>&1 || debian_install python3
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            # Debian's python3 has no ensurepip without python3-venv.
            rm -rf "$venv"
            debian_install python3-venv
            python3 -m venv "$venv"
        fi
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$dir/requirements.txt"
    echo "$req_sum" > "$venv/.compat-requirements"
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0

echo "== JavaScript: @openfeature/flagd-provider (in-process, rpc)"
# Every wait in the tests has a deadline; the timeout only guards against a process that
# never exits (see js/child.mjs).
timeout --kill-after=10 300 node --test --test-reporter=spec "$dir/js/" 2>&1 | tee "$logs/js.log" || status=1

echo "== Python: openfeature-provider-flagd (in-process, rpc)"
timeout --kill-after=10 300 "$venv/bin/python" -m unittest discover "$dir/py" -v 2>&1 | tee "$logs/py.log" || status=1

echo
echo "== change → event times (ms), from the REST call's start to the provider's event"
cat "$logs/js.log" "$logs/py.log" | "$venv/bin/python" -c '
import re, statistics, sys
rows = {}
for line in sys.stdin:
    # unittest -v may print "test_x (…) ... " before it on the same line.
    m = re.search(r"(?:^|\s)TIMING (\S+) (\S+) (\S+) ([0-9.]+)\s*$", line)
    if m:
        rows.setdefault(m.group(1, 2, 3), []).append(float(m.group(4)))
fmt = "{:<7} {:<11} {:<26} {:>3} {:>9} {:>9} {:>9}"
print(fmt.format("client", "mode", "what", "n", "min", "median", "max"))
for (client, mode, what), v in sorted(rows.items()):
    print(fmt.format(client, mode, what, len(v), f"{min(v):.1f}", f"{statistics.median(v):.1f}", f"{max(v):.1f}"))
'

if [ "$status" = 0 ]; then echo "OpenFeature compatibility suite: passed"; else echo "OpenFeature compatibility suite: FAILED"; fi
exit "$status"
