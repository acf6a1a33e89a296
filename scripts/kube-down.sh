#!/usr/bin/env bash
# Stops what kube-up.sh started in DIR and removes what it set up: the control plane, the node's
# containers (their shims, mounts and cgroups), and its network namespace with the veth pair
# (the host's route to the pods goes with it).
set -u
dir="${1:?usage: kube-down.sh DIR}"
[ -f "$dir/env" ] || exit 0
dir=$(cd "$dir" && pwd)
# shellcheck disable=SC1091
. "$dir/env"
# The API server may have been restarted (kube-restart-apiserver.sh): its pid file is current.
pids="$PROBITY_TEST_PIDS $(cat "$dir/apiserver.pid" 2>/dev/null)"
for pid in $pids; do kill "$pid" 2>/dev/null; done
sleep 1
for pid in $pids; do kill -9 "$pid" 2>/dev/null; done

# The containers outlive containerd: their shims were started for its socket. Kill each shim's
# process tree (the containers' processes are its descendants), leaves first.
tree() { local p; for p in $(pgrep -P "$1"); do tree "$p"; done; echo "$1"; }
sock="$dir/containerd/containerd.sock"
for shim in $(pgrep -f -- "-address $sock" 2>/dev/null); do
  for p in $(tree "$shim"); do kill -9 "$p" 2>/dev/null; done
done

# Mounts under DIR: container root filesystems, kubelet volumes, pod network namespaces.
for _ in 1 2 3; do
  mounts=$(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
  [ -z "$mounts" ] && break
  for m in $mounts; do umount -l "$m" 2>/dev/null; done
done

# The containers' cgroups (empty now), named after the pods' and containers' ids.
if [ -d "$dir/containerd/state" ]; then
  for cg in /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/*/kubepods*; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
fi

# The pods' network namespaces (containerd keeps them in /run/netns): those whose eth0 has an
# address in the node's pod CIDR.
pod_net=$(awk -F= '/^PROBITY_TEST_POD_CIDR=/ {print $2}' "$dir/env" | cut -d. -f1-2)
if [ -n "$pod_net" ]; then
  for n in $(ip netns list | awk '/^cni-/ {print $1}'); do
    ip -n "$n" -4 addr show 2>/dev/null | grep -q "inet $pod_net\." && ip netns delete "$n"
  done
fi

netns="${PROBITY_TEST_NETNS:-}"
if [ -n "$netns" ] && ip netns list | grep -qw "$netns"; then
  ip netns delete "$netns"
fi
ip link delete probity-host 2>/dev/null
[ "$(cat /run/probity-node.owner 2>/dev/null)" = "$dir" ] && rm -f /run/probity-node.owner
exit 0
