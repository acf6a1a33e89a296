#!/usr/bin/env bash
# Stops the kube-apiserver that kube-up.sh started in DIR and starts it again with the same
# flags (etcd keeps the data); returns once it is ready. For the tests of recovering from an
# API server restart.
set -euo pipefail
dir="${1:?usage: kube-restart-apiserver.sh DIR}"
pid=$(cat "$dir/apiserver.pid")
kill "$pid" 2>/dev/null || true
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -9 "$pid" 2>/dev/null || true
sleep "${DOWN_SECONDS:-2}"
bash "$dir/apiserver.sh" >>"$dir/apiserver.log" 2>&1 &
echo $! > "$dir/apiserver.pid"
for _ in $(seq 1 120); do
  kubectl --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "kube-restart-apiserver: not ready again" >&2
exit 1
