#!/usr/bin/env bash
# Stops what kube-up.sh started in DIR.
set -u
dir="${1:?usage: kube-down.sh DIR}"
[ -f "$dir/env" ] || exit 0
# shellcheck disable=SC1091
. "$dir/env"
for pid in $PROBITY_TEST_PIDS; do kill "$pid" 2>/dev/null; done
sleep 1
for pid in $PROBITY_TEST_PIDS; do kill -9 "$pid" 2>/dev/null; done
exit 0
