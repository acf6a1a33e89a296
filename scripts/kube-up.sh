#!/usr/bin/env bash
# Starts a real control plane on loopback for the kubernetes-backend tests: etcd, kube-apiserver
# and kube-controller-manager (garbage collection, service accounts), built by kube-build.sh.
# There is no kubelet: pods stay Pending until the tests' node agent runs them.
#
#   scripts/kube-up.sh DIR     # writes DIR/kubeconfig and DIR/env (ports, pids); prints DIR
#   scripts/kube-down.sh DIR
set -euo pipefail

dir="${1:?usage: kube-up.sh DIR}"
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
log() { echo "kube-up: $*" >&2; }
bin=$(bash "$(dirname "$0")/kube-build.sh")
command -v etcd >/dev/null || {
  log "installing etcd-server"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >&2
}

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
cert apiserver ca "/CN=kube-apiserver" "IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc"
cert front-proxy-client front-proxy-ca "/CN=front-proxy-client"
cert controller-manager ca "/CN=system:kube-controller-manager"
ssl genrsa -out sa.key 2048
ssl rsa -in sa.key -pubout -out sa.pub
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
echo "$token,admin,admin,system:masters" > tokens.csv
cd "$dir"

etcd --data-dir "$dir/etcd" --name probity-test \
  --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "probity-test=http://127.0.0.1:$etcd_peer" >"$dir/etcd.log" 2>&1 &
etcd_pid=$!

# The API server's command line goes in a script, so kube-restart-apiserver.sh can start it again.
{
  echo '#!/usr/bin/env bash'
  echo "exec \\"
  cat <<CMD
"$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_client" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api" --insecure-port 0 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 --endpoint-reconciler-type none \
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
  cluster: {server: "https://127.0.0.1:$api", certificate-authority: "$pki/ca.crt"}
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

for i in $(seq 1 120); do
  if kubectl --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "$api_pid" 2>/dev/null; then log "kube-apiserver died:"; tail -20 "$dir/apiserver.log" >&2; exit 1; fi
  sleep 0.5
done
kubectl --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null

"$bin/kube-controller-manager" \
  --kubeconfig "$dir/kubeconfig-cm" --authentication-kubeconfig "$dir/kubeconfig-cm" \
  --authorization-kubeconfig "$dir/kubeconfig-cm" \
  --leader-elect=false --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --bind-address 127.0.0.1 --secure-port 0 --port 0 \
  --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-ttl,-bootstrapsigner,-tokencleaner' \
  >"$dir/controller-manager.log" 2>&1 &
cm_pid=$!

cat > "$dir/env" <<ENV
KUBECONFIG=$dir/kubeconfig
PROBITY_TEST_API=https://127.0.0.1:$api
PROBITY_TEST_PIDS="$etcd_pid $api_pid $cm_pid"
ENV
log "ready: https://127.0.0.1:$api (kubeconfig $dir/kubeconfig)"
echo "$dir"
