#!/usr/bin/env bash
# Build the Docker images the tests and the compose stacks run, with no container
# registry: only Debian's package archive, PyPI and files of this repository are used.
#
# Usage: scripts/build-local-images.sh [--rebuild] [--refresh] [NAME...]
#
#   NAME          python      mcp-bridge/python:local: Debian bookworm (python3 3.11,
#                             python3-venv, ca-certificates) made with debootstrap
#                             (minbase) and `docker import`ed
#                 mcp-server  mcp-bridge/mcp-server:local: FROM the image above, the
#                             official MCP Python SDK (`mcp` from PyPI, installed offline
#                             from wheels fetched on the host) and
#                             tests/fixtures/mcp_server.py as `python3 /app/mcp_server.py`
#                 mcp-server-v1  mcp-bridge/mcp-server-v1:local: the same fixture on the
#                             SDK's 1.x line (MCP_V1_SDK_SPEC), which speaks only the
#                             `initialize` handshake
#                 mcp-server-time  mcp-bridge/mcp-server-time:local: FROM python, the MCP
#                             project's reference time server (MCP_TIME_SPEC from PyPI), a
#                             stdio server that exposes no port (images/mcp-server-time)
#                 mcp-server-git  mcp-bridge/mcp-server-git:local: FROM python, PyPI's
#                             mcp-server-git (MCP_GIT_SPEC) and Debian's git, over /repo
#                             (images/mcp-server-git)
#                 mcp-server-npm  mcp-bridge/mcp-server-npm:local: FROM python, the
#                             host's Node (20) and the MCP project's reference servers from
#                             npm (MCP_NPM_SERVERS): server-everything, -memory, -filesystem; stdio,
#                             no port (images/mcp-server-npm)
#                 consul      mcp-bridge/consul:local: FROM scratch, Debian bullseye's
#                             consul 1.8.7 (the binary scripts/local-services.sh fetches
#                             to $MCP_BRIDGE_HOME/consul/consul, reused), Debian's
#                             busybox-static and the glibc files consul links
#                             (images/consul/Dockerfile)
#                 dind        mcp-bridge/dind:local: Docker-in-Docker, a debootstrap'ed
#                             bookworm (minbase + docker.io iptables procps
#                             ca-certificates) with images/dind/dind-entrypoint.sh
#                 podman      mcp-bridge/podman:<suite>: rootful Podman serving its
#                             Docker-compatible API, a debootstrap'ed suite (+ podman crun
#                             conmon netavark aardvark-dns iptables nftables catatonit) with the same
#                             entrypoint; podman-bookworm (4.3), podman-trixie (5.4),
#                             podman-all
#                 bridge      mcp-bridge/bridge:local: the repository's Dockerfile with
#                             BASE_IMAGE=mcp-bridge/python:local, installed offline from
#                             wheels fetched on the host
#                 Full names (mcp-bridge/python:local) work too. Default: all.
#                 mcp-server and bridge build python first if that image is missing.
#   --rebuild     rebuild the named images even if they are up to date (from the
#                 cached root file system tarball and wheels)
#   --refresh     also throw away the cached debootstrap, root file system and wheels
#                 and fetch them again (implies --rebuild; the consul and busybox
#                 binaries shared with scripts/local-services.sh are kept)
#
# Idempotent: an image is skipped when it exists and carries the label
# org.mcp-bridge.inputs with the hash of what it is built from (recipe, Dockerfile,
# fixture, SDK requirement, base image id, the package's code); otherwise it is (re)built.
# Cached under $MCP_BRIDGE_HOME/cache: debootstrap, the root file system tarballs
# (debian-bookworm-minbase-*.tar, dind-debian-bookworm-minbase-*.tar) and the wheels
# (wheels/<requirement>-cp311-<arch>, wheels/mcp-bridge-deps-<hash>-cp311-<arch>).
# Progress goes to stderr; at the end the images are listed on stdout.
# Works from any directory, without a terminal or stdin (CI=true).
#
# Environment:
#   DOCKER_HOST              engine to use (default: the docker CLI's default)
#   MCP_BRIDGE_HOME          cache/state dir, default /opt/mcp-bridge
#   MCP_SDK_SPEC             pip requirement for the SDK, default mcp==2.3.0
#   MCP_V1_SDK_SPEC          the same for mcp-server-v1, default mcp==1.30.0
#   MCP_TIME_SPEC            the same for mcp-server-time, default mcp-server-time==2026.10.19
#   MCP_GIT_SPEC             the same for mcp-server-git, default mcp-server-git==2026.10.19
#   MCP_NPM_SERVERS          npm packages of mcp-server-npm (server-everything,
#                            server-memory and server-filesystem, 2026.8.31)
#   MCP_BRIDGE_DEBIAN_MIRROR default http://deb.debian.org/debian
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive LC_ALL=C
# No stdin needed (CI): never wait on a terminal. Command output goes to stderr; the
# final image list goes to fd 3 (the real stdout).
exec </dev/null 3>&1 1>&2

PROG="build-local-images"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOME_DIR="${MCP_BRIDGE_HOME:-/opt/mcp-bridge}"
CACHE_DIR="$HOME_DIR/cache"
LOCK_FILE="/run/lock/mcp-bridge-build-local-images.lock"

PYTHON_IMAGE="mcp-bridge/python:local"
MCP_IMAGE="mcp-bridge/mcp-server:local"
MCP_V1_IMAGE="mcp-bridge/mcp-server-v1:local"
TIME_IMAGE="mcp-bridge/mcp-server-time:local"
GIT_IMAGE="mcp-bridge/mcp-server-git:local"
NPM_IMAGE="mcp-bridge/mcp-server-npm:local"
CONSUL_IMAGE="mcp-bridge/consul:local"
# mcp-bridge/dind:<suite>, an engine of each Debian suite's docker.io: bookworm (20.10),
# trixie (26.1), sid (28.5). bookworm's is also tagged mcp-bridge/dind:local.
DIND_IMAGE="mcp-bridge/dind:local"
BRIDGE_IMAGE="mcp-bridge/bridge:local"
ALL_NAMES=(python mcp-server mcp-server-v1 mcp-server-time mcp-server-git mcp-server-npm consul dind bridge)

SUITE=bookworm                      # python3 is 3.11 there: the wheels are cp311
PY_TAG=cp311
PY_VERSION=3.11
VARIANT=minbase
INCLUDE="python3,python3-venv,ca-certificates"
DIND_INCLUDE="docker.io,iptables,procps,ca-certificates"
# Rootful Podman and what it runs containers with (its Recommends are not installed by
# debootstrap); netavark is its network stack on both 4.3 and 5.x.
PODMAN_INCLUDE="podman,crun,conmon,netavark,aardvark-dns,iptables,nftables,catatonit,procps,ca-certificates"
MIRROR="${MCP_BRIDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MIRROR="${MIRROR%/}"
MCP_SDK_SPEC="${MCP_SDK_SPEC:-mcp==2.3.0}"
MCP_V1_SDK_SPEC="${MCP_V1_SDK_SPEC:-mcp==1.30.0}"
MCP_TIME_SPEC="${MCP_TIME_SPEC:-mcp-server-time==2026.10.19}"
MCP_GIT_SPEC="${MCP_GIT_SPEC:-mcp-server-git==2026.10.19}"
MCP_NPM_SERVERS="${MCP_NPM_SERVERS:-@modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/server-memory@2026.8.31 @modelcontextprotocol/server-filesystem@2026.8.31}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 -o APT::Sandbox::User=root)
INPUTS_LABEL=org.mcp-bridge.inputs

REBUILD=0
REFRESH=0
WANT=()
TMP_DIRS=()
APT_UPDATED=0

log() { printf '[%s] %s\n' "$PROG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; }
sha() { sha256sum | cut -c1-16; }

# Unmount whatever is still mounted below a directory (an interrupted debootstrap
# leaves proc/sys mounted in its target), then remove it without crossing into
# another file system.
umount_below() {  # dir
    local dir m
    dir=$(cd "$1" && pwd -P)
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
}

remove_tree() {  # dir
    [ -e "$1" ] || return 0
    umount_below "$1"
    rm -rf --one-file-system "$1"
}

cleanup() {
    local d
    for d in "${TMP_DIRS[@]}"; do remove_tree "$d" || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A temporary directory under the cache (same file system, room for a rootfs), removed
# on exit. Sets the variable named $1 (not echoed: a $(...) subshell would lose TMP_DIRS).
make_tmp() {  # var prefix
    mkdir -p "$CACHE_DIR/tmp"
    local d
    d=$(mktemp -d "$CACHE_DIR/tmp/$2.XXXXXX")
    TMP_DIRS+=("$d")
    printf -v "$1" '%s' "$d"
}

elapsed() { echo "$((SECONDS - $1))s"; }

# --------------------------------------------------------------------------
# arguments, preconditions

parse_args() {
    local a
    for a in "$@"; do
        case "$a" in
            -h|--help) usage; exit 0 ;;
            --rebuild) REBUILD=1 ;;
            --refresh) REFRESH=1; REBUILD=1 ;;
            -*) usage; die "unknown option $a" ;;
            python|mcp-bridge/python|"$PYTHON_IMAGE") WANT+=(python) ;;
            mcp-server|mcp-bridge/mcp-server|"$MCP_IMAGE") WANT+=(mcp-server) ;;
            mcp-server-v1|mcp-bridge/mcp-server-v1|"$MCP_V1_IMAGE") WANT+=(mcp-server-v1) ;;
            mcp-server-time|mcp-bridge/mcp-server-time|"$TIME_IMAGE") WANT+=(mcp-server-time) ;;
            mcp-server-npm|mcp-bridge/mcp-server-npm|"$NPM_IMAGE") WANT+=(mcp-server-npm) ;;
            mcp-server-git|mcp-bridge/mcp-server-git|"$GIT_IMAGE") WANT+=(mcp-server-git) ;;
            consul|mcp-bridge/consul|"$CONSUL_IMAGE") WANT+=(consul) ;;
            dind|mcp-bridge/dind|"$DIND_IMAGE"|dind-bookworm|mcp-bridge/dind:bookworm) WANT+=(dind) ;;
            dind-trixie|mcp-bridge/dind:trixie) WANT+=(dind-trixie) ;;
            dind-sid|mcp-bridge/dind:sid) WANT+=(dind-sid) ;;
            dind-all) WANT+=(dind dind-trixie dind-sid) ;;
            podman|podman-bookworm|mcp-bridge/podman:bookworm) WANT+=(podman-bookworm) ;;
            podman-trixie|mcp-bridge/podman:trixie) WANT+=(podman-trixie) ;;
            podman-all) WANT+=(podman-bookworm podman-trixie) ;;
            bridge|mcp-bridge/bridge|"$BRIDGE_IMAGE") WANT+=(bridge) ;;
            all) WANT+=("${ALL_NAMES[@]}") ;;
            *) usage; die "unknown image $a (known: ${ALL_NAMES[*]})" ;;
        esac
    done
    [ "${#WANT[@]}" -gt 0 ] || WANT=("${ALL_NAMES[@]}")
}

wanted() { [[ " ${WANT[*]} " == *" $1 "* ]]; }

check_host() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap needs chroot and mknod)"
    local t
    for t in docker apt-get dpkg-deb dpkg tar sha256sum flock ldd; do
        have "$t" || die "$t not found on PATH"
    done
    timeout 20 docker info >/dev/null 2>&1 \
        || die "no Docker engine answers${DOCKER_HOST:+ at $DOCKER_HOST}; start one with: $REPO_ROOT/scripts/local-services.sh up"
    case "$(dpkg --print-architecture)" in
        amd64) ARCH=amd64; WHEEL_ARCH=x86_64 ;;
        arm64) ARCH=arm64; WHEEL_ARCH=aarch64 ;;
        *) die "unsupported architecture $(dpkg --print-architecture) (amd64, arm64)" ;;
    esac
}

take_lock() {
    mkdir -p "$(dirname "$LOCK_FILE")" "$CACHE_DIR"
    exec 9>"$LOCK_FILE"
    if ! flock -n 9; then
        log "another build-local-images.sh run holds $LOCK_FILE; waiting (up to 20 min)"
        flock -w 1200 9 || die "timed out waiting for $LOCK_FILE"
    fi
}

# --------------------------------------------------------------------------
# images

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }
image_label() {  # image label
    docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# 0 when the image must be (re)built; says why
needs_build() {  # image inputs-hash
    local have_hash
    if ! image_id "$1" >/dev/null; then
        log "$1: not there yet"
        return 0
    fi
    if [ "$REBUILD" -eq 1 ]; then
        log "$1: exists, rebuilding (--rebuild)"
        return 0
    fi
    have_hash=$(image_label "$1" "$INPUTS_LABEL")
    if [ "$have_hash" != "$2" ]; then
        log "$1: exists but was built from other inputs (${have_hash:-unlabelled}, now $2); rebuilding"
        return 0
    fi
    log "$1: up to date ($INPUTS_LABEL=$2), skipping"
    return 1
}

# After a rebuild, drop the image the tag used to point at if nothing uses it.
drop_old_image() {  # old-id new-id
    [ -n "$1" ] && [ "$1" != "$2" ] || return 0
    docker image rm "$1" >/dev/null 2>&1 && log "removed the previous image $(echo "${1#sha256:}" | cut -c1-12)" || true
}

# --------------------------------------------------------------------------
# apt (host): fetch single .deb files without installing them

apt_download() {  # dir package
    local dir=$1 pkg=$2
    mkdir -p "$dir"
    rm -f "$dir/${pkg}"_*.deb
    if ! (cd "$dir" && apt-get "${APT_OPTS[@]}" download -q "$pkg"); then
        if [ "$APT_UPDATED" -eq 0 ]; then
            log "apt-get update (to find $pkg)"
            apt-get "${APT_OPTS[@]}" update -qq
            APT_UPDATED=1
        fi
        (cd "$dir" && apt-get "${APT_OPTS[@]}" download -q "$pkg") || die "apt-get download $pkg failed"
    fi
    ls "$dir/${pkg}"_*.deb >/dev/null 2>&1 || die "apt-get download $pkg gave no .deb"
}

# debootstrap from Debian's package, unpacked (not installed) under the cache
ensure_debootstrap() {
    local dir="$CACHE_DIR/debootstrap"
    DEBOOTSTRAP_ROOT="$dir/root"
    if [ "$REFRESH" -eq 1 ] || [ ! -x "$DEBOOTSTRAP_ROOT/usr/sbin/debootstrap" ]; then
        log "fetching Debian's debootstrap package"
        apt_download "$dir/debs" debootstrap
        remove_tree "$DEBOOTSTRAP_ROOT"
        mkdir -p "$DEBOOTSTRAP_ROOT"
        dpkg -x "$dir"/debs/debootstrap_*.deb "$DEBOOTSTRAP_ROOT"
    fi
    [ -r "$DEBOOTSTRAP_ROOT/usr/share/debootstrap/scripts/$SUITE" ] \
        || die "debootstrap at $DEBOOTSTRAP_ROOT knows no suite $SUITE"
    if [ ! -r "$KEYRING" ]; then
        # no archive keyring on the host: take it from Debian's package as well
        KEYRING="$dir/keyring/usr/share/keyrings/debian-archive-keyring.gpg"
        if [ ! -r "$KEYRING" ]; then
            apt_download "$dir/debs" debian-archive-keyring
            dpkg -x "$dir"/debs/debian-archive-keyring_*.deb "$dir/keyring"
        fi
    fi
    have gpgv || die "gpgv not found (debootstrap checks the Release signature with it)"
    have wget || die "wget not found (debootstrap downloads with it): apt-get install wget"
}

# --------------------------------------------------------------------------
# mcp-bridge/python:local

# debootstrap into $1
make_rootfs() {  # dir
    local target=$1
    DEBOOTSTRAP_DIR="$DEBOOTSTRAP_ROOT/usr/share/debootstrap" \
        "$DEBOOTSTRAP_ROOT/usr/sbin/debootstrap" \
        --variant="$VARIANT" --include="$INCLUDE" --arch="$ARCH" \
        --components=main --keyring="$KEYRING" \
        "$SUITE" "$target" "$MIRROR"
}

# Trim a fresh root file system for use as an image, Debian-slim style.
slim_rootfs() {  # dir
    local r=$1
    # apt indexes and downloaded packages, logs, docs (copyrights stay), man pages,
    # translations, the host's identity that debootstrap copied in
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
           "$r"/var/lib/dpkg/*-old "$r"/usr/share/man/* "$r"/usr/share/info/* \
           "$r"/usr/share/groff/* "$r"/usr/share/lintian/* "$r"/usr/share/linda/* \
           "$r"/tmp/* "$r"/var/tmp/* "$r"/root/.cache
    mkdir -p "$r"/var/lib/apt/lists/partial
    find "$r"/var/log -type f -delete
    find "$r"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find "$r"/usr/share/doc -mindepth 1 -type d -empty -delete
    find "$r"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    : >"$r"/etc/resolv.conf
    echo localhost >"$r"/etc/hostname
    [ ! -e "$r"/etc/machine-id ] || : >"$r"/etc/machine-id
    # device nodes: the engine gives every container its own /dev
    find "$r"/dev -mindepth 1 -delete
    # keep later `apt-get install`s in derived images lean too
    cat >"$r"/etc/dpkg/dpkg.cfg.d/docker-slim <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$r"/etc/apt/apt.conf.d/docker-clean <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::Install-Recommends "false";
EOF
    # no service starts inside image builds
    printf '#!/bin/sh\nexit 101\n' >"$r"/usr/sbin/policy-rc.d
    chmod 755 "$r"/usr/sbin/policy-rc.d
    rm -f "$r"/etc/apt/sources.list
    cat >"$r"/etc/apt/sources.list.d/debian.sources <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE$([ "$SUITE" = sid ] || echo " $SUITE-updates")
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # sid has neither updates nor security suites
    [ "$SUITE" = sid ] || cat >>"$r"/etc/apt/sources.list.d/debian.sources <<EOF

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

python_inputs() {
    { echo "$SUITE $VARIANT $INCLUDE $ARCH $MIRROR"; declare -f make_rootfs slim_rootfs; } | sha
}

# the cached root file system tarball $CACHE_DIR/NAME-HASH.tar (made when missing), with
# the packages in INCLUDE; the command must run in it (chroot) before it is kept
ensure_rootfs_tarball() {  # name hash include command...
    local name=$1 hash=$2 include=$3 tarball work t0
    shift 3
    tarball="$CACHE_DIR/$name-$hash.tar"
    ROOTFS_TARBALL=$tarball
    if [ "$REFRESH" -eq 1 ]; then rm -f "$tarball"; fi
    if [ -s "$tarball" ]; then
        log "using the cached root file system $tarball"
        return 0
    fi
    ensure_debootstrap
    make_tmp work rootfs
    t0=$SECONDS
    log "debootstrap $SUITE ($VARIANT, +$include) from $MIRROR (takes a minute or so)"
    if ! INCLUDE=$include make_rootfs "$work/root" >"$work/debootstrap.out" 2>&1; then
        tail -n 25 "$work/debootstrap.out" >&2
        [ ! -r "$work/root/debootstrap/debootstrap.log" ] \
            || { echo "  --- debootstrap.log:" >&2; tail -n 25 "$work/root/debootstrap/debootstrap.log" >&2; }
        die "debootstrap failed"
    fi
    log "debootstrap done in $(elapsed "$t0")"
    umount_below "$work/root"
    chroot "$work/root" "$@" >&2 || die "the new root file system fails: $*"
    slim_rootfs "$work/root"
    # the tarball appears only when complete
    tar --numeric-owner --xattrs -C "$work/root" -cf "$work/rootfs.tar" .
    mv -f "$work/rootfs.tar" "$tarball"
    # older tarballs of other recipes
    find "$CACHE_DIR" -maxdepth 1 -name "$name-*.tar" ! -path "$tarball" -delete
    log "cached $tarball ($(du -h "$tarball" | cut -f1))"
    remove_tree "$work"
}

build_python() {
    local hash old t0 id
    hash=$(python_inputs)
    needs_build "$PYTHON_IMAGE" "$hash" || return 0
    t0=$SECONDS
    ensure_rootfs_tarball "debian-$SUITE-$VARIANT-$ARCH" "$hash" "$INCLUDE" \
        python3 -c 'import ssl, venv, ensurepip'
    old=$(image_id "$PYTHON_IMAGE" || true)
    log "docker import $ROOTFS_TARBALL as $PYTHON_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL $INPUTS_LABEL=$hash" \
        --change "LABEL org.opencontainers.image.title=\"mcp-bridge local Python (Debian $SUITE $VARIANT)\"" \
        --change "LABEL org.opencontainers.image.description=\"debootstrap --variant=$VARIANT --include=$INCLUDE $SUITE $MIRROR\"" \
        --message "debootstrap $SUITE $VARIANT +$INCLUDE" \
        - "$PYTHON_IMAGE" <"$ROOTFS_TARBALL" >/dev/null
    id=$(image_id "$PYTHON_IMAGE")
    docker run --rm --network none "$PYTHON_IMAGE" python3 -c \
        'import ssl, sys, venv; print("python", sys.version.split()[0], ssl.OPENSSL_VERSION)' >&2 \
        || die "$PYTHON_IMAGE does not run python3"
    drop_old_image "$old" "$id"
    log "built $PYTHON_IMAGE in $(elapsed "$t0")"
}

# --------------------------------------------------------------------------
# mcp-bridge/mcp-server:local

# `docker build` of a context with the classic builder (the 28.x CLI has no buildx plugin
# here), FROM $PYTHON_IMAGE, labelled with its inputs' hash; then the build stage's image,
# of no further use, is pruned. Sets OLD_ID (the image it replaces, if any) and NEW_ID.
classic_build() {  # image hash context [more docker build arguments]
    local image=$1 hash=$2 ctx=$3
    shift 3
    OLD_ID=$(image_id "$image" || true)
    DOCKER_BUILDKIT=0 docker build --force-rm \
        --build-arg "BASE_IMAGE=$PYTHON_IMAGE" \
        --label "$INPUTS_LABEL=$hash" \
        "$@" -t "$image" "$ctx" >&2 \
        || die "docker build of $image failed"
    NEW_ID=$(image_id "$image")
    docker image prune -f --filter "label=org.mcp-bridge.stage=build" >/dev/null 2>&1 || true
}


# pip on the host to download with (any version; it only fetches files)
host_pip() {
    local py
    for py in "$REPO_ROOT/.venv/bin/python" python3; do
        if "$py" -m pip --version >/dev/null 2>&1; then
            PIP=("$py" -m pip)
            return 0
        fi
    done
    # A fresh machine (the laptop stack's first `up`): make the project's venv, then use it.
    log "no pip on the host: creating $REPO_ROOT/.venv (scripts/bootstrap.sh)"
    "$REPO_ROOT/scripts/bootstrap.sh" >&2 || die "scripts/bootstrap.sh failed"
    PIP=("$REPO_ROOT/.venv/bin/python" -m pip)
}

# the requirements and their dependencies as wheels for the image's CPython, into a folder
pip_download() {  # dir requirement...
    local dest=$1 plats=() n
    shift
    host_pip
    # bookworm has glibc 2.36: every manylinux tag up to that
    for n in $(seq 17 36); do plats+=(--platform "manylinux_2_${n}_$WHEEL_ARCH"); done
    plats+=(--platform "manylinux2014_$WHEEL_ARCH")
    log "pip download $* (+ dependencies) as $PY_TAG $WHEEL_ARCH wheels"
    "${PIP[@]}" download --disable-pip-version-check --no-input --progress-bar off -q \
        --only-binary=:all: --implementation cp --python-version "$PY_VERSION" --abi "$PY_TAG" \
        "${plats[@]}" -d "$dest" "$@" \
        || die "pip download $* failed"
}

# `mcp` and its dependencies as wheels for the image's CPython, cached per requirement
ensure_wheels() {  # requirement
    local spec=$1 slug dir tmp
    # readable, and unique per requirement ("mcp<2" and "mcp>2" differ)
    slug=$(printf '%s' "$spec" | sed 's/==/-/; s/[^A-Za-z0-9._-]/_/g')
    slug="$slug-$(printf '%s' "$spec" | sha | cut -c1-8)"
    dir="$CACHE_DIR/wheels/$slug-$PY_TAG-$WHEEL_ARCH"
    WHEEL_DIR=$dir
    if [ "$REFRESH" -eq 1 ]; then remove_tree "$dir"; fi
    if [ -e "$dir/.complete" ]; then
        log "using the cached wheels in $dir"
        return 0
    fi
    make_tmp tmp wheels
    pip_download "$tmp/wheels" "$spec"
    printf '%s\n' "$spec" >"$tmp/wheels/requirements.txt"
    touch "$tmp/wheels/.complete"
    mkdir -p "$(dirname "$dir")"
    remove_tree "$dir"
    mv "$tmp/wheels" "$dir"
    log "cached $(find "$dir" -name '*.whl' | wc -l) wheels ($(du -sh "$dir" | cut -f1)) in $dir"
}

sdk_version() {  # from the mcp-X.Y.Z-*.whl file name
    local w
    w=$(find "$WHEEL_DIR" -maxdepth 1 -name 'mcp-*.whl' -printf '%f\n' | head -n1)
    [ -n "$w" ] || die "no mcp wheel in $WHEEL_DIR"
    w=${w#mcp-}
    echo "${w%%-*}"
}

mcp_inputs() {  # base-image-id requirement
    {
        echo "$1 $2 $PY_TAG $WHEEL_ARCH"
        cat "$REPO_ROOT/images/mcp-server/Dockerfile" "$REPO_ROOT/tests/fixtures/mcp_server.py"
    } | sha
}

build_mcp_server() {  # image requirement
    local image=$1 spec=$2 base_id hash ctx t0 sdk
    [ -r "$REPO_ROOT/images/mcp-server/Dockerfile" ] || die "missing images/mcp-server/Dockerfile"
    [ -r "$REPO_ROOT/tests/fixtures/mcp_server.py" ] || die "missing tests/fixtures/mcp_server.py"
    base_id=$(image_id "$PYTHON_IMAGE") || die "$PYTHON_IMAGE is missing"
    hash=$(mcp_inputs "$base_id" "$spec")
    needs_build "$image" "$hash" || return 0
    t0=$SECONDS
    ensure_wheels "$spec"
    sdk=$(sdk_version)
    make_tmp ctx mcp-server-context
    cp "$REPO_ROOT/images/mcp-server/Dockerfile" "$ctx/Dockerfile"
    cp "$REPO_ROOT/tests/fixtures/mcp_server.py" "$ctx/mcp_server.py"
    cp -a "$WHEEL_DIR" "$ctx/wheels"
    rm -f "$ctx/wheels/.complete"
    log "docker build $image (mcp $sdk, classic builder)"
    classic_build "$image" "$hash" "$ctx" --label "org.mcp-bridge.mcp-sdk-version=$sdk"
    docker run --rm --network none "$image" python3 -c \
        'from importlib.metadata import version; import mcp.server; print("mcp", version("mcp"))' >&2 \
        || die "$image cannot import the MCP SDK"
    drop_old_image "$OLD_ID" "$NEW_ID"
    log "built $image in $(elapsed "$t0")"
}

# mcp-bridge/mcp-server-time:local, mcp-bridge/mcp-server-git:local: reference stdio
# servers from PyPI, each with its images/<name>/Dockerfile
build_pypi_server() {  # image requirement images-dir command-that-must-run
    local image=$1 spec=$2 df="$REPO_ROOT/images/$3/Dockerfile" check=$4
    local base_id hash ctx t0
    [ -r "$df" ] || die "missing $df"
    base_id=$(image_id "$PYTHON_IMAGE") || die "$PYTHON_IMAGE is missing"
    hash=$( { echo "$base_id $spec $PY_TAG $WHEEL_ARCH"; cat "$df"; } | sha)
    needs_build "$image" "$hash" || return 0
    t0=$SECONDS
    ensure_wheels "$spec"
    make_tmp ctx "$3-context"
    cp "$df" "$ctx/Dockerfile"
    cp -a "$WHEEL_DIR" "$ctx/wheels"
    rm -f "$ctx/wheels/.complete"
    log "docker build $image ($spec, classic builder)"
    classic_build "$image" "$hash" "$ctx"
    # shellcheck disable=SC2086 # a command and its arguments
    docker run --rm --network none "$image" $check >/dev/null \
        || die "$image does not run: $check"
    drop_old_image "$OLD_ID" "$NEW_ID"
    log "built $image in $(elapsed "$t0")"
}

# mcp-bridge/mcp-server-npm:local: reference stdio servers from npm, on the host's Node
build_npm_server() {
    local image=$NPM_IMAGE df="$REPO_ROOT/images/mcp-server-npm/Dockerfile"
    local node base_id hash ctx t0 dir slug
    [ -r "$df" ] || die "missing $df"
    node=$(command -v node) || die "node not found: $image needs Node 20 on the host"
    have npm || die "npm not found: $image installs its servers with npm on the host"
    base_id=$(image_id "$PYTHON_IMAGE") || die "$PYTHON_IMAGE is missing"
    hash=$( { echo "$base_id $MCP_NPM_SERVERS $("$node" --version)"; cat "$df" "$node"; } | sha)
    needs_build "$image" "$hash" || return 0
    t0=$SECONDS
    # the servers and their dependencies, installed once per package list
    slug=$(printf '%s' "$MCP_NPM_SERVERS" | sha | cut -c1-12)
    dir="$CACHE_DIR/npm/servers-$slug"
    if [ "$REFRESH" -eq 1 ]; then remove_tree "$dir"; fi
    if [ ! -e "$dir/.complete" ]; then
        remove_tree "$dir"
        mkdir -p "$dir"
        log "npm install $MCP_NPM_SERVERS"
        # shellcheck disable=SC2086 # a list of packages
        npm install --prefix "$dir" --no-audit --no-fund --omit=dev --no-package-lock \
            $MCP_NPM_SERVERS >&2 || die "npm install $MCP_NPM_SERVERS failed"
        touch "$dir/.complete"
    fi
    make_tmp ctx npm-server-context
    cp "$df" "$ctx/Dockerfile"
    cp "$node" "$ctx/node"
    mkdir -p "$ctx/app"
    cp -a "$dir/node_modules" "$ctx/app/node_modules"
    log "docker build $image (node $("$node" --version), classic builder)"
    classic_build "$image" "$hash" "$ctx"
    docker run --rm --network none "$image" node --version >/dev/null \
        || die "$image does not run node"
    drop_old_image "$OLD_ID" "$NEW_ID"
    log "built $image in $(elapsed "$t0")"
}

# --------------------------------------------------------------------------
# mcp-bridge/consul:local

# Debian bullseye's consul binary where scripts/local-services.sh keeps it; fetched the
# same way when missing
ensure_consul_binary() {
    local apt_dir="$HOME_DIR/apt" list debs x opts
    CONSUL_BIN="$HOME_DIR/consul/consul"
    if [ -x "$CONSUL_BIN" ] && "$CONSUL_BIN" version >/dev/null 2>&1; then
        return 0
    fi
    log "no $CONSUL_BIN yet: fetching Debian bullseye's consul package"
    list="$apt_dir/bullseye.list"
    debs="$apt_dir/debs"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$debs"
    echo "deb $MIRROR bullseye main" >"$list"
    opts=("${APT_OPTS[@]}"
        -o "Dir::Etc::sourcelist=$list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
        -o APT::Get::List-Cleanup=0)
    apt-get "${opts[@]}" update -qq || die "apt-get update (bullseye) failed"
    rm -f "$debs"/consul_*.deb
    (cd "$debs" && apt-get "${opts[@]}" download -q consul) || die "apt-get download consul failed"
    make_tmp x consul-deb
    dpkg-deb -x "$debs"/consul_*.deb "$x"
    mkdir -p "$(dirname "$CONSUL_BIN")"
    install -m 0755 "$x/usr/bin/consul" "$CONSUL_BIN.new"
    mv -f "$CONSUL_BIN.new" "$CONSUL_BIN"
    "$CONSUL_BIN" version >/dev/null || die "$CONSUL_BIN does not run"
}

# Debian's busybox-static binary where scripts/local-services.sh keeps it (fetched when
# missing; the package itself is never installed: it conflicts with `busybox`)
ensure_busybox_binary() {
    local dir="$HOME_DIR/busybox" x
    BUSYBOX_BIN="$dir/busybox"
    [ -x "$BUSYBOX_BIN" ] && return 0
    log "no $BUSYBOX_BIN yet: fetching Debian's busybox-static package"
    apt_download "$dir/debs" busybox-static
    make_tmp x busybox-deb
    dpkg-deb -x "$dir"/debs/busybox-static_*.deb "$x"
    install -m 0755 "$x/bin/busybox" "$BUSYBOX_BIN.new"
    mv -f "$BUSYBOX_BIN.new" "$BUSYBOX_BIN"
}

# the shared objects a binary loads (ldd), the dynamic loader included
linked_files() {  # binary
    ldd "$1" | awk '$2 == "=>" && $3 ~ "^/" { print $3; next } $1 ~ "^/" { print $1 }'
}

consul_inputs() {
    {
        sha256sum "$CONSUL_BIN" "$BUSYBOX_BIN"
        linked_files "$CONSUL_BIN" | while read -r f; do echo "$f $(sha256sum <"$f")"; done
        cat "$REPO_ROOT/images/consul/Dockerfile"
    } | sha
}

build_consul() {
    local hash old ctx t0 id f
    [ -r "$REPO_ROOT/images/consul/Dockerfile" ] || die "missing images/consul/Dockerfile"
    ensure_consul_binary
    ensure_busybox_binary
    hash=$(consul_inputs)
    needs_build "$CONSUL_IMAGE" "$hash" || return 0
    t0=$SECONDS
    make_tmp ctx consul-context
    mkdir -p "$ctx/rootfs/bin"
    cp "$REPO_ROOT/images/consul/Dockerfile" "$ctx/Dockerfile"
    install -m 0755 "$CONSUL_BIN" "$ctx/rootfs/bin/consul"
    install -m 0755 "$BUSYBOX_BIN" "$ctx/rootfs/bin/busybox"
    # the glibc consul links, at the paths its ELF header and ldd name (cp -L: the files
    # behind the symlinks)
    while read -r f; do
        mkdir -p "$ctx/rootfs$(dirname "$f")"
        cp -L "$f" "$ctx/rootfs$f"
    done < <(linked_files "$CONSUL_BIN")
    old=$(image_id "$CONSUL_IMAGE" || true)
    log "docker build $CONSUL_IMAGE ($("$CONSUL_BIN" version | head -n1), classic builder)"
    DOCKER_BUILDKIT=0 docker build --force-rm -q \
        --label "$INPUTS_LABEL=$hash" \
        -t "$CONSUL_IMAGE" "$ctx" >&2 \
        || die "docker build of $CONSUL_IMAGE failed"
    id=$(image_id "$CONSUL_IMAGE")
    docker run --rm --network none "$CONSUL_IMAGE" version >&2 \
        || die "$CONSUL_IMAGE does not run consul"
    drop_old_image "$old" "$id"
    log "built $CONSUL_IMAGE in $(elapsed "$t0")"
}

# --------------------------------------------------------------------------
# mcp-bridge/dind:local

dind_rootfs_inputs() {
    { echo "$SUITE $VARIANT $ENGINE_INCLUDE $ARCH $MIRROR"; declare -f make_rootfs slim_rootfs; } | sha
}

# The images of one suite: build_dind sets SUITE, DIND_ROOTFS_IMAGE and DIND_SUITE_IMAGE
# (bash's dynamic scope), so the shared steps below build for that suite.

# the debootstrap'ed root file system, imported as an image of its own
# (mcp-bridge/dind-rootfs:local), so that a change of the entrypoint costs no re-import
build_dind_rootfs() {
    local hash old id
    hash=$(dind_rootfs_inputs)
    needs_build "$DIND_ROOTFS_IMAGE" "$hash" || return 0
    # shellcheck disable=SC2086 # a command and its arguments
    ensure_rootfs_tarball "$ENGINE-debian-$SUITE-$VARIANT-$ARCH" "$hash" "$ENGINE_INCLUDE" \
        $ENGINE_ROOTFS_CHECK
    old=$(image_id "$DIND_ROOTFS_IMAGE" || true)
    log "docker import $ROOTFS_TARBALL as $DIND_ROOTFS_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $INPUTS_LABEL=$hash" \
        --change "LABEL org.opencontainers.image.description=\"debootstrap --variant=$VARIANT --include=$ENGINE_INCLUDE $SUITE $MIRROR\"" \
        --message "debootstrap $SUITE $VARIANT +$ENGINE_INCLUDE" \
        - "$DIND_ROOTFS_IMAGE" <"$ROOTFS_TARBALL" >/dev/null
    id=$(image_id "$DIND_ROOTFS_IMAGE")
    drop_old_image "$old" "$id"
}

# The engine's build context: images/<engine>/ (Dockerfile and what it copies) and the
# shared entrypoint
dind_inputs() {  # rootfs-image-id
    { echo "$1"; cat "$REPO_ROOT/images/$ENGINE"/* "$REPO_ROOT/images/dind/dind-entrypoint.sh"; } | sha
}

build_dind_suite() {
    local base_id hash ctx t0
    [ -r "$REPO_ROOT/images/$ENGINE/Dockerfile" ] || die "missing images/$ENGINE/Dockerfile"
    [ -r "$REPO_ROOT/images/dind/dind-entrypoint.sh" ] || die "missing images/dind/dind-entrypoint.sh"
    t0=$SECONDS
    build_dind_rootfs
    base_id=$(image_id "$DIND_ROOTFS_IMAGE") || die "$DIND_ROOTFS_IMAGE is missing"
    hash=$(dind_inputs "$base_id")
    needs_build "$DIND_SUITE_IMAGE" "$hash" || return 0
    make_tmp ctx dind-context
    cp "$REPO_ROOT/images/$ENGINE"/* "$ctx/"
    install -m 0755 "$REPO_ROOT/images/dind/dind-entrypoint.sh" "$ctx/dind-entrypoint.sh"
    old=$(image_id "$DIND_SUITE_IMAGE" || true)
    log "docker build $DIND_SUITE_IMAGE (classic builder)"
    DOCKER_BUILDKIT=0 docker build --force-rm -q \
        --build-arg "ROOTFS_IMAGE=$DIND_ROOTFS_IMAGE" \
        --label "$INPUTS_LABEL=$hash" \
        -t "$DIND_SUITE_IMAGE" "$ctx" >&2 \
        || die "docker build of $DIND_SUITE_IMAGE failed"
    id=$(image_id "$DIND_SUITE_IMAGE")
    docker run --rm --network none --entrypoint "$ENGINE_CHECK" "$DIND_SUITE_IMAGE" --version >&2 \
        || die "$DIND_SUITE_IMAGE has no working $ENGINE_CHECK"
    drop_old_image "$old" "$id"
    log "built $DIND_SUITE_IMAGE in $(elapsed "$t0")"
}

build_dind() {  # suite
    local SUITE=$1 ENGINE=dind ENGINE_INCLUDE=$DIND_INCLUDE ENGINE_CHECK=dockerd
    local ENGINE_ROOTFS_CHECK="dockerd --version"
    local DIND_ROOTFS_IMAGE="mcp-bridge/dind-rootfs:$1" DIND_SUITE_IMAGE="mcp-bridge/dind:$1"
    build_dind_suite
    if [ "$SUITE" = bookworm ]; then
        docker tag "$DIND_SUITE_IMAGE" "$DIND_IMAGE"
    fi
}

# --------------------------------------------------------------------------
# mcp-bridge/bridge:local

# what the package needs to be built and installed: [build-system] requires and
# [project] dependencies of pyproject.toml, one per line
bridge_requirements() {
    "${PIP[0]}" - "$REPO_ROOT/pyproject.toml" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    meta = tomllib.load(f)
for req in meta["build-system"]["requires"] + ["wheel"] + meta["project"]["dependencies"]:
    print(req)
PY
}

# the project's dependencies and build backend as wheels for the image's CPython, cached
# per set of requirements (so only a change of pyproject.toml's lists fetches again)
ensure_bridge_wheels() {
    local reqs=() dir tmp r
    host_pip
    while read -r r; do reqs+=("$r"); done < <(bridge_requirements)
    [ "${#reqs[@]}" -gt 1 ] || die "no requirements read from pyproject.toml"
    dir="$CACHE_DIR/wheels/mcp-bridge-deps-$(printf '%s\n' "${reqs[@]}" | sha | cut -c1-8)-$PY_TAG-$WHEEL_ARCH"
    BRIDGE_WHEEL_DIR=$dir
    if [ "$REFRESH" -eq 1 ]; then remove_tree "$dir"; fi
    if [ -e "$dir/.complete" ]; then
        log "using the cached wheels in $dir"
        return 0
    fi
    make_tmp tmp wheels
    pip_download "$tmp/wheels" "${reqs[@]}"
    touch "$tmp/wheels/.complete"
    mkdir -p "$(dirname "$dir")"
    remove_tree "$dir"
    mv "$tmp/wheels" "$dir"
    # wheels for earlier dependency lists
    find "$CACHE_DIR/wheels" -mindepth 1 -maxdepth 1 -name "mcp-bridge-deps-*-$PY_TAG-$WHEEL_ARCH" \
        ! -path "$dir" -exec rm -rf {} +
    log "cached $(find "$dir" -name '*.whl' | wc -l) wheels ($(du -sh "$dir" | cut -f1)) in $dir"
}

# the package's files as the image gets them (README.md only feeds the package's long
# description: an edit of it alone does not rebuild the image)
bridge_sources() {
    (cd "$REPO_ROOT" && find bridge -type f -name '*.py' | LC_ALL=C sort)
}

bridge_inputs() {  # base-image-id wheel-dir
    {
        echo "$1 $(basename "$2")"
        cd "$REPO_ROOT"
        cat Dockerfile .dockerignore pyproject.toml
        bridge_sources | while read -r f; do echo "$f"; cat "$f"; done
    } | sha
}

build_bridge() {
    local base_id hash ctx t0 uid f
    [ -r "$REPO_ROOT/Dockerfile" ] || die "missing Dockerfile at the repository root"
    base_id=$(image_id "$PYTHON_IMAGE") || die "$PYTHON_IMAGE is missing"
    ensure_bridge_wheels
    hash=$(bridge_inputs "$base_id" "$BRIDGE_WHEEL_DIR")
    needs_build "$BRIDGE_IMAGE" "$hash" || return 0
    t0=$SECONDS
    # a context of our own: only the package, and the wheels, never written into the repo
    make_tmp ctx bridge-context
    cp "$REPO_ROOT/Dockerfile" "$REPO_ROOT/.dockerignore" "$REPO_ROOT/pyproject.toml" \
        "$REPO_ROOT/README.md" "$ctx/"
    while read -r f; do
        mkdir -p "$ctx/$(dirname "$f")"
        cp "$REPO_ROOT/$f" "$ctx/$f"
    done < <(bridge_sources)
    cp -a "$BRIDGE_WHEEL_DIR" "$ctx/wheels"
    rm -f "$ctx/wheels/.complete"
    log "docker build $BRIDGE_IMAGE (BASE_IMAGE=$PYTHON_IMAGE, offline from wheels, classic builder)"
    classic_build "$BRIDGE_IMAGE" "$hash" "$ctx"
    docker run --rm --network none "$BRIDGE_IMAGE" --help >/dev/null \
        || die "$BRIDGE_IMAGE: \`mcp-bridge --help\` fails"
    uid=$(docker run --rm --network none --entrypoint python3 "$BRIDGE_IMAGE" -c 'import os; print(os.getuid())')
    [ "$uid" != 0 ] || die "$BRIDGE_IMAGE runs as root"
    drop_old_image "$OLD_ID" "$NEW_ID"
    log "built $BRIDGE_IMAGE (runs as uid $uid) in $(elapsed "$t0")"
}

# mcp-bridge/podman:<suite>: the same recipe and entrypoint, with Podman for the engine
build_podman() {  # suite
    local SUITE=$1 ENGINE=podman ENGINE_INCLUDE=$PODMAN_INCLUDE ENGINE_CHECK=podman
    # Podman 5 reads /proc, which the chroot has not: its package is checked instead
    local ENGINE_ROOTFS_CHECK="dpkg-query -W podman"
    local DIND_ROOTFS_IMAGE="mcp-bridge/podman-rootfs:$1" DIND_SUITE_IMAGE="mcp-bridge/podman:$1"
    build_dind_suite
}

# --------------------------------------------------------------------------

list_images() {
    local refs=() i
    for i in "$PYTHON_IMAGE" "$MCP_IMAGE" "$MCP_V1_IMAGE" "$CONSUL_IMAGE" "mcp-bridge/dind-rootfs:*" "mcp-bridge/dind:*" "mcp-bridge/podman-rootfs:*" "mcp-bridge/podman:*" "$BRIDGE_IMAGE"; do
        refs+=(--filter "reference=$i")
    done
    docker image ls "${refs[@]}" \
        --format 'table {{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}' >&3
}

ensure_python() {  # for: image that needs it
    if ! image_id "$PYTHON_IMAGE" >/dev/null; then
        log "$1 needs $PYTHON_IMAGE first"
        build_python
    fi
}

main() {
    parse_args "$@"
    check_host
    take_lock
    local t0=$SECONDS
    if wanted python; then
        build_python
    fi
    if wanted mcp-server; then
        ensure_python "$MCP_IMAGE"
        build_mcp_server "$MCP_IMAGE" "$MCP_SDK_SPEC"
    fi
    if wanted mcp-server-v1; then
        ensure_python "$MCP_V1_IMAGE"
        build_mcp_server "$MCP_V1_IMAGE" "$MCP_V1_SDK_SPEC"
    fi
    if wanted mcp-server-time; then
        ensure_python "$TIME_IMAGE"
        build_pypi_server "$TIME_IMAGE" "$MCP_TIME_SPEC" mcp-server-time "mcp-server-time --help"
    fi
    if wanted mcp-server-git; then
        ensure_python "$GIT_IMAGE"
        build_pypi_server "$GIT_IMAGE" "$MCP_GIT_SPEC" mcp-server-git "git -C /repo log -1"
    fi
    if wanted mcp-server-npm; then
        ensure_python "$NPM_IMAGE"
        build_npm_server
    fi
    if wanted consul; then
        build_consul
    fi
    if wanted dind; then
        build_dind bookworm
    fi
    if wanted dind-trixie; then
        build_dind trixie
    fi
    if wanted dind-sid; then
        build_dind sid
    fi
    if wanted podman-bookworm; then
        build_podman bookworm
    fi
    if wanted podman-trixie; then
        build_podman trixie
    fi
    if wanted bridge; then
        ensure_python "$BRIDGE_IMAGE"
        build_bridge
    fi
    log "done in $(elapsed "$t0")"
    list_images
}

main "$@"
