#!/usr/bin/env bash
# Builds the test node's images from what is on this machine (there is no registry) and imports
# them into the node's containerd under the names real manifests use, so manifests apply
# unchanged with `imagePullPolicy: IfNotPresent`. Any other name fails to pull, for real.
#
#   scripts/node-images.sh DIR                   # the base set (kube-up.sh does this)
#   scripts/node-images.sh DIR --probity BINARY  # probity's image from a release binary
#
# The base set:
#   k8s.gcr.io/pause:3.2                 the pod sandbox: a static pause built with gcc
#   docker.io/library/busybox:1.35       busybox-static (Debian's, 1.35) and nothing else
#   docker.io/library/busybox:1.35-glibc the same plus glibc, so a mounted host binary runs
#                                        (the tests mount this build's probity into it)
#   docker.io/curlimages/curl:8.5.0      Debian's curl and its libraries, with busybox's sh: what
#                                        the Kuberhealthy v3 example manifest runs (the tag is the
#                                        name manifests use; the curl inside is Debian's)
#   docker.io/nginxinc/nginx-unprivileged:1.17.8 and :1.17.9
#                                        stand-ins for the deployment check's default images:
#                                        busybox httpd on 8080 as user 101 (as nginx-unprivileged
#                                        runs), serving an index.html that names the tag
#   gcr.io/google-containers/pause:3.1   the pause above, under the daemonset check's default name
# probity's image is named as deploy/deployment.yaml names it (ghcr.io/probity/probity:<version>):
# the binary, its libraries, CA certificates and a passwd entry for 65532, run as 65532.
set -euo pipefail

dir="${1:?usage: node-images.sh DIR [--probity BINARY]}"
dir=$(cd "$dir" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "node-images: $*" >&2; }
sock="$dir/containerd/containerd.sock"
[ -S "$sock" ] || { log "no containerd at $sock: run scripts/kube-up.sh $dir first"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# copy_libs ROOTFS BINARY...: the shared libraries the binaries load, at the same paths.
copy_libs() {
  local rootfs="$1"; shift
  ldd "$@" 2>/dev/null | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u |
    while read -r lib; do cp --parents -L "$lib" "$rootfs/"; done
}

# busybox ROOTFS: busybox-static with one relative symlink per applet.
busybox_into() {
  mkdir -p "$1/bin" "$1/tmp" "$1/etc"
  cp /bin/busybox "$1/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$1/etc/group"
}

# image NAME:TAG FILL [umoci config flags...]: a one-layer OCI image whose rootfs FILL populates
# (called with the rootfs path), imported under exactly NAME:TAG.
image() {
  local ref="$1" fill="$2"; shift 2
  local name="${ref%:*}" tag="${ref##*:}"
  local layout="$work/layout" bundle="$work/bundle"
  rm -rf "$layout" "$bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
  "$fill" "$bundle/rootfs"
  umoci repack --image "$layout:$tag" "$bundle"
  umoci config --image "$layout:$tag" --config.env PATH=/usr/local/bin:/usr/bin:/bin "$@"
  umoci gc --layout "$layout"
  (cd "$layout" && tar -cf "$work/image.tar" .)
  # Imported under its final name: the CRI plugin keeps the name an image was first imported as.
  ctr --address "$sock" -n k8s.io images import --base-name "$name" "$work/image.tar" >/dev/null
  ctr --address "$sock" -n k8s.io images ls -q | grep -x "$ref" >/dev/null || { log "importing $ref failed"; exit 1; }
  log "imported $ref"
}

fill_pause() {
  cat > "$work/pause.c" <<'C'
/* The pod sandbox: holds the pod's namespaces, reaps orphans, ends on SIGINT/SIGTERM. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, quit);
  signal(SIGTERM, quit);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
C
  gcc -static -O2 -o "$1/pause" "$work/pause.c"
}
fill_busybox() { busybox_into "$1"; }
# What a Rust binary built on this machine loads.
fill_busybox_glibc() {
  busybox_into "$1"
  cp --parents -L /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libc.so.6 \
    /lib/x86_64-linux-gnu/libm.so.6 /lib/x86_64-linux-gnu/libgcc_s.so.1 "$1/"
}
fill_curl() {
  busybox_into "$1"
  mkdir -p "$1/usr/bin" "$1/etc/ssl/certs"
  cp /usr/bin/curl "$1/usr/bin/curl"
  copy_libs "$1" /usr/bin/curl
  cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"
  echo 'curl_user:x:100:101:curl:/home/curl_user:/bin/sh' >> "$1/etc/passwd"
}
# web ROOTFS TAG: the nginx-unprivileged stand-in.
fill_web() {
  busybox_into "$1"
  mkdir -p "$1/usr/share/nginx/html"
  echo "probity test web server $web_tag" > "$1/usr/share/nginx/html/index.html"
  echo 'nginx:x:101:101:nginx:/nonexistent:/bin/sh' >> "$1/etc/passwd"
}
probity_bin=""
fill_probity() {
  mkdir -p "$1/usr/local/bin" "$1/etc/ssl/certs" "$1/tmp"
  cp "$probity_bin" "$1/usr/local/bin/probity"
  copy_libs "$1" "$probity_bin"
  cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$1/etc/group"
  chmod 1777 "$1/tmp"
}

if [ "${2:-}" = "--probity" ]; then
  probity_bin="${3:?--probity needs the binary}"
  [ -x "$probity_bin" ] || { log "$probity_bin is not an executable"; exit 1; }
  ref=$(awk '/image: ghcr.io\/probity\/probity:/ {print $2; exit}' "$root/deploy/deployment.yaml")
  [ -n "$ref" ] || { log "deploy/deployment.yaml names no ghcr.io/probity/probity image"; exit 1; }
  # A rebuilt binary replaces the image of the same name.
  ctr --address "$sock" -n k8s.io images rm "$ref" >/dev/null 2>&1 || true
  image "$ref" fill_probity --config.user 65532:65532 \
    --config.entrypoint /usr/local/bin/probity --config.cmd serve --config.exposedports 8080/tcp
  exit 0
fi

image k8s.gcr.io/pause:3.2 fill_pause --config.entrypoint /pause
image docker.io/library/busybox:1.35 fill_busybox --config.cmd sh
image docker.io/library/busybox:1.35-glibc fill_busybox_glibc --config.cmd sh
image docker.io/curlimages/curl:8.5.0 fill_curl --config.user 100:101 --config.entrypoint curl
for web_tag in 1.17.8 1.17.9; do
  image "docker.io/nginxinc/nginx-unprivileged:$web_tag" fill_web --config.user 101:101 \
    --config.entrypoint /bin/httpd --config.cmd -f --config.cmd -p --config.cmd 8080 \
    --config.cmd -h --config.cmd /usr/share/nginx/html --config.exposedports 8080/tcp
done
image gcr.io/google-containers/pause:3.1 fill_pause --config.entrypoint /pause
