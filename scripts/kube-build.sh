#!/usr/bin/env bash
# Builds the control plane (kube-apiserver, kube-controller-manager, kube-scheduler) and the node
# (kubelet, kube-proxy) from Debian's `kubernetes` source package (upstream v1.20.2 with its vendor
# tree) and caches them under $PROBITY_KUBE_CACHE, keyed by the source version, so later runs skip
# the build; a cache holding only some of them builds the rest. See shared/reference/test-cluster.md
# and real-node.md. Prints the directory holding the binaries.
set -euo pipefail

cache="${PROBITY_KUBE_CACHE:-$HOME/.cache/probity/kube}"
log() { echo "kube-build: $*" >&2; }

need_apt() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# deb-src for the archive this machine already uses.
if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding a deb-src line for bookworm"
  cat > /etc/apt/sources.list.d/probity-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq >&2
fi

version=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2; exit}')
[ -n "$version" ] || { log "apt-cache knows no source package kubernetes"; exit 1; }
out="$cache/$version"
missing=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  [ -x "$out/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$out"
  exit 0
fi

need_apt golang-1.19-go rsync dpkg-dev golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
work="$cache/build-$version"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
log "fetching the kubernetes $version source package"
apt-get source --download-only kubernetes >&2
dpkg-source --no-check -x ./*.dsc src >&2
cd src

# Go >= 1.18 crashes the vendored reflect2 1.0.1 when a custom resource is created: use Debian's
# fixed copies of reflect2 and json-iterator instead (test files left out).
for pkg in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  find "vendor/$pkg" -maxdepth 1 -name '*.go' -delete
  find "/usr/share/gocode/src/$pkg" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "vendor/$pkg/" \;
done

log "building ${missing[*]} (about 2-4 minutes each on 2 cores)"
export PATH="/usr/lib/go-1.19/bin:$PATH" GOPROXY=off CGO_ENABLED=0 GOFLAGS=
make WHAT="${missing[*]/#/cmd/}" >&2
mkdir -p "$out"
for b in "${missing[@]}"; do cp "_output/bin/$b" "$out/"; done
cd / && rm -rf "$work"
log "cached in $out"
echo "$out"
