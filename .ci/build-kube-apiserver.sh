#!/usr/bin/env bash
# Build kube-apiserver from Debian's `kubernetes` source package and cache the binary.
#
# The Kubernetes target's tests run against a real kube-apiserver (backed by etcd from
# Debian). No prebuilt binary can be fetched here, so this script builds one from the
# distribution's source package, once: a cached binary makes every later run a no-op.
#
# Environment:
#   KUBE_CACHE   where sources and the binary live (default /var/cache/churn-kube);
#                kept outside the repository so a fresh clone reuses the build.
#   KUBE_JOBS    parallel compile jobs (default: number of cores).
#
# Output: ${KUBE_CACHE}/bin/kube-apiserver, plus etcd installed from Debian's etcd-server.
# First build: about 6 minutes on 2 cores (5m20s of it compiling); afterwards a no-op.
set -euo pipefail

KUBE_CACHE="${KUBE_CACHE:-/var/cache/churn-kube}"
BIN="${KUBE_CACHE}/bin/kube-apiserver"
# Bump when the recipe changes so a cached binary from an older recipe is rebuilt.
RECIPE="debian-kubernetes-1.20 reflect2-1.0.2 json-iterator-1.1.12 v1"
SRC_LIST=/etc/apt/sources.list.d/churn-debian-src.sources

log() { printf '[build-kube-apiserver] %s\n' "$*" >&2; }

need_apt_update=0
install_debs() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        if ((need_apt_update == 0)); then
            apt-get update -qq
            need_apt_update=1
        fi
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# etcd is needed at test time whether or not the apiserver is cached.
install_debs etcd-server

if [[ -x "$BIN" ]] && [[ "$(cat "${BIN}.recipe" 2>/dev/null)" == "$RECIPE" ]] \
    && "$BIN" --version >/dev/null 2>&1; then
    log "cached: $BIN ($("$BIN" --version))"
    exit 0
fi

# Source entries: the machine's own Debian sources with only deb-src enabled (a copy with
# "deb deb-src" would list every binary index twice and make apt warn on each update).
if [[ ! -f "$SRC_LIST" ]]; then
    if [[ ! -f /etc/apt/sources.list.d/debian.sources ]]; then
        log "no /etc/apt/sources.list.d/debian.sources to derive deb-src entries from"
        exit 1
    fi
    sed -E 's/^Types:.*$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$SRC_LIST"
fi
apt-get update -qq
need_apt_update=1

install_debs golang-go dpkg-dev rsync make ca-certificates \
    golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev

mkdir -p "${KUBE_CACHE}/src" "${KUBE_CACHE}/bin"
cd "${KUBE_CACHE}/src"
srcdir="$(find . -maxdepth 1 -type d -name 'kubernetes-*' | sort | tail -n1)"
if [[ -z "$srcdir" ]]; then
    log "fetching Debian source package 'kubernetes' into ${KUBE_CACHE}/src"
    apt-get source -qq kubernetes
    srcdir="$(find . -maxdepth 1 -type d -name 'kubernetes-*' | sort | tail -n1)"
fi
[[ -n "$srcdir" ]] || { log "apt-get source kubernetes produced no source tree"; exit 1; }
cd "$srcdir"

# The tree records the Go it was written for in .go-version or build/build-image/cross;
# Debian builds it with its own golang-go, which is what we use too.
log "source: $(pwd); go: $(go version)"
want_go="$(cat build/build-image/cross/VERSION 2>/dev/null || true)"
[[ -n "$want_go" ]] && log "upstream build image for this release: ${want_go}"

# Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, whose map iteration faults under
# Go >= 1.18 ("unexpected fault address" in UnsafeMapType.UnsafeIterate the first time
# a custom resource is decoded). Debian's golang-1.19 needs the fixed reflect2 1.0.2 and
# the json-iterator 1.1.12 written for it: take both from Debian's Go source packages.
gocode=/usr/share/gocode/src/github.com
for dep in modern-go/reflect2 json-iterator/go; do
    [[ -d "${gocode}/${dep}" ]] || { log "missing ${gocode}/${dep}"; exit 1; }
    rsync -a --delete --exclude '*_test.go' --exclude 'test/' --exclude 'skip_tests/' \
        --exclude 'benchmarks/' --exclude 'api_tests/' --exclude 'extra/' --exclude 'misc_tests/' \
        --exclude 'type_tests/' "${gocode}/${dep}/" "vendor/github.com/${dep}/"
done
log "vendored from Debian: reflect2 $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev), json-iterator $(dpkg-query -W -f='${Version}' golang-github-json-iterator-go-dev)"

# Kubernetes 1.20 builds in GOPATH mode (hack/lib/init.sh sets GO111MODULE=off) and
# generates pkg/generated/openapi during `make`, so follow debian/rules: `make WHAT=...`.
unset GOFLAGS GO111MODULE
export CGO_ENABLED=0 GOCACHE="${KUBE_CACHE}/gocache" HOME="${KUBE_CACHE}/home"
export PATH="/usr/lib/go/bin:${PATH}"
mkdir -p "$HOME"
version="$(dpkg-parsechangelog -S Version 2>/dev/null || echo unknown)"
upstream="${version#*really}"
upstream="v${upstream%%-*}"
# hack/lib/version.sh reads these instead of asking git (the source package has no .git).
export KUBE_GIT_VERSION="$upstream" KUBE_GIT_TREE_STATE=clean
minor="$(echo "$upstream" | cut -d. -f2)"
export KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR="$minor"
export GOFLAGS="-p=${KUBE_JOBS:-$(nproc)}"

log "building cmd/kube-apiserver (${upstream}) with ${GOFLAGS}"
start=$(date +%s)
make WHAT=cmd/kube-apiserver KUBE_BUILD_PLATFORMS=linux/amd64 GOLDFLAGS="-s -w"
cp _output/bin/kube-apiserver "${BIN}.tmp"
mv "${BIN}.tmp" "$BIN"
echo "$RECIPE" >"${BIN}.recipe"
log "built $BIN in $(($(date +%s) - start))s: $("$BIN" --version)"
