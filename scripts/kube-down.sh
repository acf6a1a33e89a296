#!/usr/bin/env bash
# Stops what kube-up.sh started in DIR.
set -u
dir="${1:?usage: kube-down.sh DIR}"
[ -f "$dir/env" ] || exit 0
# shellcheck disable=SC1091
. "$dir/env"
# The API server may have been restarted (kube-restart-apiserver.sh): its pid file is current.
pids="$PROBITY_TEST_PIDS $(cat "$dir/apiserver.pid" 2>/dev/null)"
for pid in $pids; do kill "$pid" 2>/dev/null; done
sleep 1
for pid in $pids; do kill -9 "$pid" 2>/dev/null; done
exit 0
