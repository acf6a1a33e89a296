#!/usr/bin/env bash
# Starts a real one-node cluster for the kubernetes-backend tests, built by kube-build.sh:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and a node: containerd + runc,
# kubelet, kube-proxy (iptables), a CNI bridge. See shared/reference/real-node.md.
#
# Network (all on this machine, nothing routed off it): the node lives in its own network
# namespace ($netns), joined to the host by a veth pair. The host end carries $host_ip, where the
# API server listens (and where tests' probity replicas listen for reports); the node end is the
# node's InternalIP $node_ip. Pods get $pod_cidr on the node's bridge; Services $svc_cidr through
# kube-proxy in the node's namespace. The node has no default route, so a pod's packet to anything
# else is unroutable. Cluster DNS is dnsmasq on the node's address behind the kube-dns Service
# ($svc_dns); it forwards nothing.
#
#   scripts/kube-up.sh DIR     # writes DIR/kubeconfig and DIR/env (addresses, pids); prints DIR
#   scripts/kube-down.sh DIR   # stops all of it and removes the network
set -euo pipefail

dir="${1:?usage: kube-up.sh DIR}"
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
scripts=$(cd "$(dirname "$0")" && pwd)
log() { echo "kube-up: $*" >&2; }
bin=$(bash "$scripts/kube-build.sh")

netns=probity-node node=probity-node
host_ip=10.201.0.1 node_ip=10.201.0.2 link_cidr=24
pod_cidr=10.202.0.0/16 pod_gw=10.202.0.1 svc_cidr=10.0.0.0/24 svc_api=10.0.0.1 svc_dns=10.0.0.10

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v umoci >/dev/null || need+=(umoci)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v ip >/dev/null || need+=(iproute2)
command -v sysctl >/dev/null || need+=(procps)
command -v nsenter >/dev/null || need+=(util-linux)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# One node at a time (the names and addresses are fixed). A cluster whose processes are all gone
# (its runner was killed) is cleaned up; a live one is left alone.
owner_file=/run/probity-node.owner
if ip netns list | grep -w "$netns" >/dev/null; then
  owner=$(cat "$owner_file" 2>/dev/null || true)
  alive=""
  if [ -n "$owner" ] && [ -f "$owner/env" ]; then
    for pid in $(. "$owner/env"; echo "$PROBITY_TEST_PIDS"); do kill -0 "$pid" 2>/dev/null && alive=1; done
  fi
  if [ -n "$alive" ] || [ -z "$owner" ]; then
    log "network namespace $netns exists: another test cluster is up (scripts/kube-down.sh ${owner:-its DIR})"
    exit 1
  fi
  log "cleaning up the remains of the test cluster in $owner"
  bash "$scripts/kube-down.sh" "$owner"
fi
echo "$dir" > "$owner_file"

# From here on, a failure leaves nothing behind.
pids=()
record() {
  cat > "$dir/env" <<ENV
KUBECONFIG=$dir/kubeconfig
PROBITY_TEST_API=https://$host_ip:${api:-}
PROBITY_TEST_HOST_IP=$host_ip
PROBITY_TEST_NODE=$node
PROBITY_TEST_NETNS=$netns
PROBITY_TEST_POD_CIDR=$pod_cidr
PROBITY_TEST_PIDS="${pids[*]}"
ENV
}
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'rc=$?; if [ $rc -ne 0 ]; then record; bash "$scripts/kube-down.sh" "$dir"; fi' EXIT
in_node() { nsenter --net="/run/netns/$netns" "$@"; }
# For daemons: `bg_in_node CMD... &` so that $! is the daemon itself.
bg_in_node() { exec nsenter --net="/run/netns/$netns" "$@"; }

# The node's network namespace and the veth pair to it.
ip netns add "$netns"
record
ip link add probity-host type veth peer name probity-peer
ip link set probity-peer netns "$netns"
ip addr add "$host_ip/$link_cidr" dev probity-host
ip link set probity-host up
ip -n "$netns" link set probity-peer name eth0
ip -n "$netns" addr add "$node_ip/$link_cidr" dev eth0
ip -n "$netns" link set eth0 up
ip -n "$netns" link set lo up
# Replies from the host to pods go back through the node.
ip route add "$pod_cidr" via "$node_ip" dev probity-host
in_node sysctl -qw net.ipv4.ip_forward=1
# Pod -> Service -> pod on the same bridge needs the bridge's traffic to pass kube-proxy's rules.
in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
  log "net.bridge.bridge-nf-call-iptables is not settable: Services between pods may not answer"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_client=$(free_port); etcd_peer=$(free_port); api=$(free_port)

pki="$dir/pki"; mkdir -p "$pki"; cd "$pki"
ssl() { openssl "$@" >/dev/null 2>&1; }
ca() { ssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 30 -subj "/CN=$1"; }
# cert NAME CA SUBJECT [SAN]
cert() {
  ssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$3"
  if [ -n "${4:-}" ]; then echo "subjectAltName=$4" > "$1.ext"; else echo "extendedKeyUsage=clientAuth" > "$1.ext"; fi
  ssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -out "$1.crt" -days 30 -extfile "$1.ext"
}
ca ca; ca front-proxy-ca
cert apiserver ca "/CN=kube-apiserver" "IP:127.0.0.1,IP:$host_ip,IP:$svc_api,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert front-proxy-client front-proxy-ca "/CN=front-proxy-client"
cert controller-manager ca "/CN=system:kube-controller-manager"
ssl genrsa -out sa.key 2048
ssl rsa -in sa.key -pubout -out sa.pub
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
echo "$token,admin,admin,system:masters" > tokens.csv
cd "$dir"

# A DIR used before holds a dead cluster's objects (the kubernetes Service's endpoint on the old
# API server port, among them); start from an empty store.
rm -rf "$dir/etcd"
etcd --data-dir "$dir/etcd" --name probity-test \
  --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "probity-test=http://127.0.0.1:$etcd_peer" >"$dir/etcd.log" 2>&1 &
pids+=($!); record

# PROBITY_KUBE_AUDIT=1: an audit log of every request (DIR/audit.log, metadata only), which tells
# clients apart by user agent; benches/cluster.rs counts probity's requests from it.
audit=""
if [ "${PROBITY_KUBE_AUDIT:-}" = 1 ]; then
  cat > "$dir/audit-policy.yaml" <<POLICY
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
POLICY
  audit="--audit-policy-file $dir/audit-policy.yaml --audit-log-path $dir/audit.log --audit-log-maxsize 1000"
fi

# The API server listens on the host end of the veth (reachable from the host and from pods, not
# from the machine's network) and keeps the `kubernetes` Service's endpoints pointing there. Its
# command line goes in a script, so kube-restart-apiserver.sh can start it again.
{
  echo '#!/usr/bin/env bash'
  echo "exec \\"
  cat <<CMD
"$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_client" \
  --bind-address "$host_ip" --advertise-address "$host_ip" --secure-port "$api" --insecure-port 0 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$svc_cidr" --endpoint-reconciler-type lease \
  --kubelet-preferred-address-types InternalIP $audit \
  --requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --requestheader-group-headers X-Remote-Group --requestheader-username-headers X-Remote-User \
  --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key"
CMD
} > "$dir/apiserver.sh"
bash "$dir/apiserver.sh" >"$dir/apiserver.log" 2>&1 &
api_pid=$!
echo "$api_pid" > "$dir/apiserver.pid"

cat > "$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://$host_ip:$api", certificate-authority: "$pki/ca.crt"}
users:
- name: admin
  user: {token: "$token"}
- name: controller-manager
  user: {client-certificate: "$pki/controller-manager.crt", client-key: "$pki/controller-manager.key"}
contexts:
- name: admin
  context: {cluster: test, user: admin}
- name: controller-manager
  context: {cluster: test, user: controller-manager}
current-context: admin
KC
sed 's/^current-context: admin/current-context: controller-manager/' "$dir/kubeconfig" > "$dir/kubeconfig-cm"

for _ in $(seq 1 120); do
  if kubectl --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "$api_pid" 2>/dev/null; then log "kube-apiserver died:"; tail -20 "$dir/apiserver.log" >&2; exit 1; fi
  sleep 0.5
done
kubectl --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null

# nodelifecycle lifts the kubelet's not-ready taint; the rest left out need a cloud or are noise.
"$bin/kube-controller-manager" \
  --kubeconfig "$dir/kubeconfig-cm" --authentication-kubeconfig "$dir/kubeconfig-cm" \
  --authorization-kubeconfig "$dir/kubeconfig-cm" \
  --leader-elect=false --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --bind-address 127.0.0.1 --secure-port 0 --port 0 \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service,-route,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-ttl,-bootstrapsigner,-tokencleaner' \
  >"$dir/controller-manager.log" 2>&1 &
pids+=($!); record

"$bin/kube-scheduler" --kubeconfig "$dir/kubeconfig" --leader-elect=false \
  --port 0 --secure-port 0 >"$dir/scheduler.log" 2>&1 &
pids+=($!); record

# containerd for the node, in the node's network namespace (the CNI bridge is created there),
# with its own root, state and sockets.
ctd="$dir/containerd"; mkdir -p "$ctd" "$dir/cni" "$dir/netns"
cat > "$ctd/config.toml" <<TOML
version = 2
root = "$ctd/root"
state = "$ctd/state"
[grpc]
  address = "$ctd/containerd.sock"
[ttrpc]
  address = "$ctd/containerd.sock.ttrpc"
[debug]
  address = "$ctd/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$ctd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.gcr.io/pause:3.2"
  # This sandbox may not lower oom_score_adj: runc would fail every sandbox.
  restrict_oom_score_adj = true
  netns_mounts_under = "$dir/netns"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
TOML
cat > "$dir/cni/10-probity.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "probity-pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr", "gateway": "$pod_gw"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$dir/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
bg_in_node containerd --config "$ctd/config.toml" >"$dir/containerd.log" 2>&1 &
pids+=($!); record
for _ in $(seq 1 100); do [ -S "$ctd/containerd.sock" ] && break; sleep 0.1; done
ctr --address "$ctd/containerd.sock" version >/dev/null || { log "containerd did not start:"; tail -20 "$dir/containerd.log" >&2; exit 1; }
bash "$scripts/node-images.sh" "$dir"

# Cluster DNS: dnsmasq in the node's namespace on the node's address, behind a kube-dns Service
# (created below, the address kubelet gives pods). It answers <service>.<namespace>.svc.cluster.local
# from a hosts file that cluster-dns.py keeps in step with the Services (a watch), and the test zone
# probity.test (external.probity.test stands for a name outside the cluster); NXDOMAIN for other
# names there and for plain names. It forwards nothing, so no query leaves the machine. Pods with
# dnsPolicy Default get a resolver that fails at once. It stays root: DIR (mktemp -d, as in CI) is
# 0700, and dnsmasq rereads the hosts file after start, when `nobody` could not (every name was
# NXDOMAIN in CI). Its log (queries included) is DIR/dnsmasq.log.
mkdir -p "$dir/dns"
: > "$dir/dns/services"
bg_in_node dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --domain-needed \
  --user=root --group=root --pid-file= --bind-interfaces --listen-address "$node_ip" \
  --log-facility=- --log-queries \
  --local=/cluster.local/ --local=/probity.test/ --hostsdir "$dir/dns" \
  --host-record="external.probity.test,$host_ip" \
  >"$dir/dnsmasq.log" 2>&1 &
pids+=($!); record
echo "nameserver 127.0.0.1" > "$dir/resolv.conf"
mkdir -p "$dir/kubelet"
bg_in_node "$bin/kubelet" \
  --kubeconfig "$dir/kubeconfig" --hostname-override "$node" --node-ip "$node_ip" \
  --container-runtime remote --container-runtime-endpoint "unix://$ctd/containerd.sock" \
  --cgroup-driver cgroupfs --fail-swap-on=false --cgroups-per-qos=false --enforce-node-allocatable= \
  --eviction-hard 'memory.available<1Mi,nodefs.available<1%,imagefs.available<1%' \
  --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
  --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" --resolv-conf "$dir/resolv.conf" \
  --cluster-dns "$svc_dns" --cluster-domain cluster.local \
  --volume-plugin-dir "$dir/kubelet/volume-plugins" \
  --anonymous-auth=true --authorization-mode AlwaysAllow --authentication-token-webhook=false \
  --read-only-port 0 --healthz-port 0 --max-pods 250 --kube-api-qps 50 --kube-api-burst 100 \
  >"$dir/kubelet.log" 2>&1 &
pids+=($!); record

bg_in_node "$bin/kube-proxy" \
  --kubeconfig "$dir/kubeconfig" --hostname-override "$node" --proxy-mode iptables \
  --cluster-cidr "$pod_cidr" --conntrack-max-per-core 0 \
  --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 \
  >"$dir/kube-proxy.log" 2>&1 &
pids+=($!); record

# Ready when the node is Ready and untainted, and the default ServiceAccount exists to run pods.
kc() { kubectl --kubeconfig "$dir/kubeconfig" "$@"; }
for i in $(seq 1 240); do
  ready=$(kc get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  taints=$(kc get node "$node" -o jsonpath='{.spec.taints}' 2>/dev/null || true)
  sa=$(kc -n default get serviceaccount default -o name 2>/dev/null || true)
  [ "$ready" = True ] && [ -z "$taints" ] && [ -n "$sa" ] && break
  if [ "$i" = 240 ]; then
    log "the node did not become Ready and untainted (Ready=$ready taints=$taints):"
    tail -20 "$dir/kubelet.log" >&2
    exit 1
  fi
  sleep 0.5
done
# The kube-dns Service and its endpoint (dnsmasq above), labelled as kube-dns is in real clusters.
kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $svc_dns
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
subsets:
- addresses: [{ip: $node_ip}]
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
YAML
# The Services' names for dnsmasq, from a watch (dnsmasq rereads the file when it is replaced).
python3 "$scripts/cluster-dns.py" "https://$host_ip:$api" "$pki/ca.crt" "$token" "$dir/dns/services" \
  >"$dir/cluster-dns.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do grep -q " kube-dns.kube-system.svc" "$dir/dns/services" && break; sleep 0.2; done
record
log "ready: https://$host_ip:$api (kubeconfig $dir/kubeconfig), node $node ($node_ip)"
echo "$dir"
