#!/usr/bin/env bash
# Local Docker engine + Consul dev agent for developing and testing mcp-bridge
# on a bare Debian bookworm machine (root, no container registry).
#
# Usage: scripts/local-services.sh COMMAND
#
#   up               Install what is missing (docker.io, curl, consul from Debian
#                    bullseye) and start dockerd and a Consul dev agent unless
#                    something already answers (root only when it has something to
#                    install or start). Idempotent. Prints shell-evaluable
#                    lines on stdout:   eval "$(scripts/local-services.sh up)"
#   docker           Only the Docker engine part of `up` (prints DOCKER_HOST).
#   down             Stop what this script started (Consul, then dockerd).
#   consul-stop      Stop the Consul dev agent started by this script.
#   consul-start     Start it again (dev mode: it comes back empty).
#   dockerd-restart  Restart the dockerd started by this script.
#   busybox-image    Build and tag mcp-bridge/busybox:local (FROM scratch +
#                    Debian's busybox-static), no registry needed. Idempotent.
#   status           Show what is running and who started it.
#   env              Print the export lines only (starts nothing).
#
# Progress goes to stderr, only `export ...` lines go to stdout.
#
# Environment:
#   DOCKER_HOST                 engine to use; if it answers nothing is started.
#                               A unix:// socket that does not answer is served
#                               by a dockerd started here. Default
#                               unix:///var/run/docker.sock
#   BRIDGE_CONSUL_URL           default http://127.0.0.1:8500
#   MCP_BRIDGE_HOME             cache/state dir, default /opt/mcp-bridge
#   MCP_BRIDGE_STORAGE_DRIVER   dockerd storage driver(s) to try, space-separated
#                               (default: probe overlay2, then fuse-overlayfs,
#                               then vfs; the first that starts is used)
#   MCP_BRIDGE_DOCKER_TIMEOUT   seconds to wait for dockerd (default 60)
#   MCP_BRIDGE_CONSUL_TIMEOUT   seconds to wait for a Consul leader (default 30)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

# Everything written to stdout by the commands below goes to stderr; the export
# lines are written to fd 3 (the real stdout).
exec 3>&1 1>&2

PROG="local-services"
HOME_DIR="${MCP_BRIDGE_HOME:-/opt/mcp-bridge}"
RUN_DIR="/run/mcp-bridge"
DOCKERD_PIDFILE="$RUN_DIR/dockerd.pid"
DOCKERD_DRIVERFILE="$HOME_DIR/dockerd.storage-driver"
DOCKERD_LOG="/var/log/mcp-bridge-dockerd.log"
CONSUL_PIDFILE="$RUN_DIR/consul.pid"
CONSUL_LOG="/var/log/mcp-bridge-consul.log"
CONSUL_DIR="$HOME_DIR/consul"
APT_DIR="$HOME_DIR/apt"
LOCK_FILE="/run/lock/mcp-bridge-local-services.lock"
DOCKER_DATA_ROOT="/var/lib/docker"
BUSYBOX_IMAGE="mcp-bridge/busybox:local"

DEFAULT_DOCKER_HOST="unix:///var/run/docker.sock"
DOCKER_URL="${DOCKER_HOST:-$DEFAULT_DOCKER_HOST}"
CONSUL_URL="${BRIDGE_CONSUL_URL:-http://127.0.0.1:8500}"
CONSUL_URL="${CONSUL_URL%/}"
DOCKER_TIMEOUT="${MCP_BRIDGE_DOCKER_TIMEOUT:-60}"
CONSUL_TIMEOUT="${MCP_BRIDGE_CONSUL_TIMEOUT:-30}"
APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
APT_UPDATED=0

log() { printf '[%s] %s\n' "$PROG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

# --------------------------------------------------------------------------
# generic helpers

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts dockerd)"
}

take_lock() {
    mkdir -p "$(dirname "$LOCK_FILE")" "$HOME_DIR" "$RUN_DIR"
    exec 9>"$LOCK_FILE"
    if ! flock -w 600 9; then
        die "another local-services.sh run holds $LOCK_FILE"
    fi
}

apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get "${APT_OPTS[@]}" update -qq
        APT_UPDATED=1
    fi
}

apt_install() {
    apt_update_once
    log "apt-get install $*"
    # Never let a package's maintainer script start a service behind our back.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "$@" </dev/null || rc=$?
    if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$rc" -eq 0 ] || die "apt-get install $* failed (rc=$rc)"
}

# pid from a pidfile if that process is alive and is the expected program
pid_of() {  # pidfile comm
    local pidfile=$1 comm=$2 pid
    [ -r "$pidfile" ] || return 1
    pid=$(head -n1 "$pidfile" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] || return 1
    [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    # a zombie is not running
    if grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then return 1; fi
    echo "$pid"
}

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

stop_pid() {  # pid name timeout
    local pid=$1 name=$2 timeout=$3 i
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 5; i++)); do
        alive "$pid" || { log "$name stopped"; return 0; }
        sleep 0.2
    done
    log "$name did not exit within ${timeout}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || return 0
        sleep 0.2
    done
    die "$name (pid $pid) does not die"
}

# error/fatal lines of the current run of a daemon log, then its last lines
log_errors() {  # logfile
    local cur
    cur=$(awk '/^===== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$1" 2>/dev/null || true)
    printf '%s\n' "$cur" | grep -E 'level=(error|fatal)|\[ERR\]|^failed|^Error' | tail -n 8 | cut -c1-400 >&2 || true
    printf '%s\n' "  --- last lines of $1:" >&2
    printf '%s\n' "$cur" | tail -n 8 | cut -c1-400 >&2 || true
}

# Start a daemon fully detached: own session, stdin/stdout/stderr away from us,
# none of our other file descriptors (lock, real stdout) inherited.
spawn() {  # logfile cmd...
    local logfile=$1; shift
    mkdir -p "$(dirname "$logfile")"
    printf '\n===== %s: %s started by %s\n' "$(date -Is)" "$*" "$0" >>"$logfile"
    setsid nohup "$@" </dev/null >>"$logfile" 2>&1 3>&- 9>&- &
    SPAWNED_PID=$!
}

# --------------------------------------------------------------------------
# curl

ensure_curl() {
    have curl || apt_install curl ca-certificates
}

# --------------------------------------------------------------------------
# Docker

docker_answers() {
    DOCKER_HOST="$DOCKER_URL" timeout 10 docker info >/dev/null 2>&1
}

ensure_docker_installed() {
    if ! have dockerd; then
        apt_install docker.io
    fi
    have dockerd || die "dockerd still not found after installing docker.io"
    have docker || die "no docker CLI on PATH"
}

# Candidate storage drivers, best first, for the file system of the data root.
storage_driver_candidates() {
    if [ -n "${MCP_BRIDGE_STORAGE_DRIVER:-}" ]; then
        printf '%s\n' $MCP_BRIDGE_STORAGE_DRIVER   # space-separated list, tried in order
        return
    fi
    if overlay_works; then echo overlay2; fi
    if [ -e /dev/fuse ] && grep -qw fuse /proc/filesystems; then echo fuse-overlayfs; fi
    echo vfs
}

# Mount an overlay the way overlay2 does (two lower dirs) on the data root's FS.
overlay_works() {
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
    grep -qw overlay /proc/filesystems || return 1
    mkdir -p "$DOCKER_DATA_ROOT"
    local t rc=0
    t=$(mktemp -d "$DOCKER_DATA_ROOT/.mcp-bridge-overlay-probe.XXXXXX")
    mkdir -p "$t"/{l1,l2,u,w,m}
    echo x >"$t/l1/f"
    if mount -t overlay overlay -o "lowerdir=$t/l1:$t/l2,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
        { [ -f "$t/m/f" ] && echo y >"$t/m/g" && [ -f "$t/u/g" ]; } || rc=1
        umount "$t/m" 2>/dev/null || umount -l "$t/m" 2>/dev/null || true
    else
        rc=1
    fi
    rm -rf "$t"
    return "$rc"
}

daemon_json_sets() {  # key
    [ -r /etc/docker/daemon.json ] && grep -q "\"$1\"" /etc/docker/daemon.json
}

# start dockerd with the given storage driver, wait until it answers
start_dockerd_with() {  # driver
    local driver=$1 args=() sock
    sock=${DOCKER_URL#unix://}
    args=(-H "$DOCKER_URL")
    # Docker's own default pidfile; keep a different one if not the default socket
    if [ "$DOCKER_URL" != "$DEFAULT_DOCKER_HOST" ]; then
        args+=(--pidfile "$RUN_DIR/dockerd-docker.pid" --exec-root "$RUN_DIR/docker-exec"
               --data-root "$DOCKER_DATA_ROOT")
    fi
    if [ -n "$driver" ] && ! daemon_json_sets storage-driver; then
        args+=(--storage-driver "$driver")
    fi
    mkdir -p "$(dirname "$sock")" "$RUN_DIR"
    log "starting dockerd ${args[*]} (log: $DOCKERD_LOG)"
    spawn "$DOCKERD_LOG" dockerd "${args[@]}"
    local pid=$SPAWNED_PID i
    echo "$pid" >"$DOCKERD_PIDFILE"
    for ((i = 0; i < DOCKER_TIMEOUT * 4; i++)); do
        if docker_answers; then
            local got
            got=$(DOCKER_HOST="$DOCKER_URL" docker info --format '{{.Driver}}' 2>/dev/null || true)
            log "dockerd is up (pid $pid, storage driver ${got:-?}) after $((i / 4))s"
            [ -n "$got" ] && echo "$got" >"$DOCKERD_DRIVERFILE"
            return 0
        fi
        if ! alive "$pid"; then
            log "dockerd (storage driver ${driver:-default}) exited early; errors from its log:"
            log_errors "$DOCKERD_LOG"
            rm -f "$DOCKERD_PIDFILE"
            return 1
        fi
        sleep 0.25
    done
    log "dockerd did not answer within ${DOCKER_TIMEOUT}s; errors from its log:"
    log_errors "$DOCKERD_LOG"
    stop_pid "$pid" dockerd 30 || true
    rm -f "$DOCKERD_PIDFILE"
    die "dockerd did not become ready (see $DOCKERD_LOG)"
}

start_dockerd() {
    case "$DOCKER_URL" in
        unix://*) ;;
        *) die "DOCKER_HOST=$DOCKER_URL does not answer and is not a local unix socket; not starting anything" ;;
    esac
    local drivers=() d tried=()
    if daemon_json_sets storage-driver; then
        drivers=("")
    else
        # unique, in order
        while read -r d; do
            [ -n "$d" ] || continue
            [[ " ${drivers[*]-} " == *" $d "* ]] || drivers+=("$d")
        done < <(storage_driver_candidates)
    fi
    for d in "${drivers[@]}"; do
        if [ "$d" = fuse-overlayfs ] && ! have fuse-overlayfs; then
            apt_install fuse-overlayfs || continue
        fi
        tried+=("${d:-daemon.json}")
        if start_dockerd_with "$d"; then return 0; fi
    done
    die "dockerd failed to start with storage drivers: ${tried[*]} (see $DOCKERD_LOG)"
}

ensure_docker() {
    ensure_docker_installed
    if docker_answers; then
        if pid_of "$DOCKERD_PIDFILE" dockerd >/dev/null; then
            log "dockerd already answers at $DOCKER_URL (pid $(pid_of "$DOCKERD_PIDFILE" dockerd), started earlier by this script); not starting another"
        else
            log "a Docker engine already answers at $DOCKER_URL; not starting one"
        fi
        return 0
    fi
    local pid
    if pid=$(pid_of "$DOCKERD_PIDFILE" dockerd); then
        # ours but not answering (still starting, or wedged): give it the timeout
        log "dockerd pid $pid (ours) is running but not answering yet; waiting"
        local i
        for ((i = 0; i < DOCKER_TIMEOUT * 4; i++)); do
            docker_answers && return 0
            alive "$pid" || break
            sleep 0.25
        done
        alive "$pid" && stop_pid "$pid" dockerd 30
        rm -f "$DOCKERD_PIDFILE"
    fi
    start_dockerd
}

stop_dockerd() {
    local pid
    if pid=$(pid_of "$DOCKERD_PIDFILE" dockerd); then
        stop_pid "$pid" dockerd 60
        # dockerd removes its socket on clean exit; wait until it stopped answering
        local i
        for ((i = 0; i < 40; i++)); do docker_answers || break; sleep 0.25; done
    else
        log "no dockerd started by this script is running"
    fi
    rm -f "$DOCKERD_PIDFILE"
}

# --------------------------------------------------------------------------
# Consul

CONSUL_BIN=""

find_consul() {
    if have consul; then
        CONSUL_BIN=$(command -v consul)
    elif [ -x "$CONSUL_DIR/consul" ]; then
        CONSUL_BIN="$CONSUL_DIR/consul"
    else
        return 1
    fi
}

ensure_consul_installed() {
    if find_consul && "$CONSUL_BIN" version >/dev/null 2>&1; then
        return 0
    fi
    log "consul not found: fetching Debian bullseye's consul package"
    local list="$APT_DIR/bullseye.list" debs="$APT_DIR/debs" x
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$debs"
    echo 'deb http://deb.debian.org/debian bullseye main' >"$list"
    chown -R _apt "$APT_DIR/lists/partial" "$debs" 2>/dev/null || true
    local opts=("${APT_OPTS[@]}"
        -o "Dir::Etc::sourcelist=$list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
        -o APT::Get::List-Cleanup=0)
    apt-get "${opts[@]}" update -qq
    rm -f "$debs"/consul_*.deb
    (cd "$debs" && apt-get "${opts[@]}" download consul)
    x=$(mktemp -d)
    dpkg-deb -x "$debs"/consul_*.deb "$x"
    mkdir -p "$CONSUL_DIR"
    install -m 0755 "$x/usr/bin/consul" "$CONSUL_DIR/consul.new"
    mv -f "$CONSUL_DIR/consul.new" "$CONSUL_DIR/consul"
    rm -rf "$x"
    "$CONSUL_DIR/consul" version >/dev/null || die "$CONSUL_DIR/consul does not run"
    if [ ! -e /usr/local/bin/consul ] || [ -L /usr/local/bin/consul ]; then
        ln -sfn "$CONSUL_DIR/consul" /usr/local/bin/consul
    fi
    CONSUL_BIN="$CONSUL_DIR/consul"
    log "installed $("$CONSUL_BIN" version | head -n1) at $CONSUL_BIN"
}

consul_leader() {
    local l
    l=$(curl -sf --max-time 3 "$CONSUL_URL/v1/status/leader" 2>/dev/null) || return 1
    [ -n "$l" ] && [ "$l" != '""' ]
}

consul_host_port() {
    local re='^http://([^/:]+|\[[^]]+\])(:([0-9]+))?$'
    [[ "$CONSUL_URL" =~ $re ]] || die "cannot start a local Consul for BRIDGE_CONSUL_URL=$CONSUL_URL (want http://HOST:PORT)"
    CONSUL_HOST=${BASH_REMATCH[1]}
    CONSUL_PORT=${BASH_REMATCH[3]:-80}
    case "$CONSUL_HOST" in
        localhost) CONSUL_HOST=127.0.0.1 ;;
        127.*|0.0.0.0) ;;
        *) die "BRIDGE_CONSUL_URL=$CONSUL_URL does not answer and is not a loopback address; not starting anything" ;;
    esac
}

start_consul() {
    consul_host_port
    ensure_consul_installed
    mkdir -p "$RUN_DIR"
    # check_update_interval 0: a check's output reaches the catalog (and the UI) at once;
    # by default Consul holds back output-only changes for 5 minutes.
    local args=(agent -dev -client "$CONSUL_HOST" -bind 127.0.0.1 -http-port "$CONSUL_PORT"
                -log-level info -hcl 'check_update_interval = "0s"')
    log "starting $CONSUL_BIN ${args[*]} (log: $CONSUL_LOG)"
    spawn "$CONSUL_LOG" "$CONSUL_BIN" "${args[@]}"
    local pid=$SPAWNED_PID i
    echo "$pid" >"$CONSUL_PIDFILE"
    for ((i = 0; i < CONSUL_TIMEOUT * 5; i++)); do
        if consul_leader; then
            log "consul is up (pid $pid) with a leader at $CONSUL_URL"
            return 0
        fi
        if ! alive "$pid"; then
            log "consul exited early; errors from its log:"
            log_errors "$CONSUL_LOG"
            rm -f "$CONSUL_PIDFILE"
            die "consul failed to start (see $CONSUL_LOG)"
        fi
        sleep 0.2
    done
    log "consul has no leader after ${CONSUL_TIMEOUT}s; errors from its log:"
    log_errors "$CONSUL_LOG"
    stop_pid "$pid" consul 20 || true
    rm -f "$CONSUL_PIDFILE"
    die "consul did not become ready (see $CONSUL_LOG)"
}

ensure_consul() {
    if consul_leader; then
        if pid_of "$CONSUL_PIDFILE" consul >/dev/null; then
            log "consul already answers at $CONSUL_URL (pid $(pid_of "$CONSUL_PIDFILE" consul), started earlier by this script); not starting another"
        else
            log "a Consul with a leader already answers at $CONSUL_URL; not starting one"
        fi
        # still make the binary available to others
        find_consul || ensure_consul_installed
        return 0
    fi
    local pid
    if pid=$(pid_of "$CONSUL_PIDFILE" consul); then
        log "consul pid $pid (ours) is running but has no leader; restarting it"
        stop_pid "$pid" consul 20
        rm -f "$CONSUL_PIDFILE"
    fi
    start_consul
}

stop_consul() {
    local pid
    if pid=$(pid_of "$CONSUL_PIDFILE" consul); then
        stop_pid "$pid" consul 30
        local i
        for ((i = 0; i < 50; i++)); do
            curl -s --max-time 1 -o /dev/null "$CONSUL_URL/v1/status/leader" || break
            sleep 0.1
        done
    else
        log "no consul started by this script is running"
    fi
    rm -f "$CONSUL_PIDFILE"
}

# --------------------------------------------------------------------------
# busybox image

busybox_image() {
    if DOCKER_HOST="$DOCKER_URL" docker image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
        log "image $BUSYBOX_IMAGE already exists"
        return 0
    fi
    local dir="$HOME_DIR/busybox" ctx
    if [ ! -x "$dir/busybox" ]; then
        # take busybox-static's binary without installing the package (it
        # conflicts with the `busybox` package others may rely on)
        mkdir -p "$dir/debs"
        chown _apt "$dir/debs" 2>/dev/null || true
        if ! apt-cache show busybox-static >/dev/null 2>&1; then apt_update_once; fi
        rm -f "$dir"/debs/busybox-static_*.deb
        (cd "$dir/debs" && apt-get "${APT_OPTS[@]}" download busybox-static) || {
            apt_update_once
            (cd "$dir/debs" && apt-get "${APT_OPTS[@]}" download busybox-static)
        }
        local x
        x=$(mktemp -d)
        dpkg-deb -x "$dir"/debs/busybox-static_*.deb "$x"
        install -m 0755 "$x/bin/busybox" "$dir/busybox"
        rm -rf "$x"
    fi
    ctx=$(mktemp -d)
    cp "$dir/busybox" "$ctx/busybox"
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/etc", "/var/www", "/root"]
RUN ["/bin/busybox", "chmod", "1777", "/tmp"]
LABEL org.opencontainers.image.title="mcp-bridge local busybox" \
      org.opencontainers.image.source="Debian busybox-static"
CMD ["/bin/sh"]
EOF
    log "building $BUSYBOX_IMAGE"
    # legacy builder: the 28.x CLI has no buildx plugin here
    DOCKER_HOST="$DOCKER_URL" DOCKER_BUILDKIT=0 docker build -q -t "$BUSYBOX_IMAGE" "$ctx" \
        || { rm -rf "$ctx"; die "docker build of $BUSYBOX_IMAGE failed"; }
    rm -rf "$ctx"
    log "built $BUSYBOX_IMAGE"
}

# --------------------------------------------------------------------------
# output

emit_docker_env() { printf 'export DOCKER_HOST=%q\n' "$DOCKER_URL" >&3; }
emit_consul_env() { printf 'export BRIDGE_CONSUL_URL=%q\n' "$CONSUL_URL" >&3; }

status() {
    local pid
    if docker_answers; then
        if pid=$(pid_of "$DOCKERD_PIDFILE" dockerd); then
            log "docker: answers at $DOCKER_URL (dockerd pid $pid, started by this script, driver $(DOCKER_HOST="$DOCKER_URL" docker info --format '{{.Driver}}' 2>/dev/null))"
        else
            log "docker: answers at $DOCKER_URL (not started by this script)"
        fi
    else
        log "docker: nothing answers at $DOCKER_URL"
    fi
    if consul_leader; then
        if pid=$(pid_of "$CONSUL_PIDFILE" consul); then
            log "consul: leader at $CONSUL_URL (pid $pid, started by this script)"
        else
            log "consul: leader at $CONSUL_URL (not started by this script)"
        fi
    else
        log "consul: nothing answers at $CONSUL_URL"
    fi
}

main() {
    local cmd=${1:-}
    case "$cmd" in
        up)
            if [ "$(id -u)" -ne 0 ] && have docker && have curl && docker_answers && consul_leader; then
                # Nothing to install or start: no root needed (e.g. run.sh as a user with
                # Docker access and a Consul of their own).
                log "Docker answers at $DOCKER_URL and Consul at $CONSUL_URL; nothing to start"
                emit_docker_env; emit_consul_env
                return 0
            fi
            need_root; take_lock
            local t0=$SECONDS
            ensure_curl
            ensure_docker
            ensure_consul
            log "ready after $((SECONDS - t0))s"
            emit_docker_env; emit_consul_env
            ;;
        docker)
            need_root; take_lock
            ensure_docker
            emit_docker_env
            ;;
        down)
            need_root; take_lock
            stop_consul
            stop_dockerd
            ;;
        consul-stop)
            need_root; take_lock
            stop_consul
            ;;
        consul-start)
            need_root; take_lock
            ensure_curl
            ensure_consul
            emit_consul_env
            ;;
        dockerd-restart)
            need_root; take_lock
            if docker_answers && ! pid_of "$DOCKERD_PIDFILE" dockerd >/dev/null; then
                die "the Docker engine at $DOCKER_URL was not started by this script; not restarting it"
            fi
            stop_dockerd
            ensure_docker
            emit_docker_env
            ;;
        busybox-image)
            need_root; take_lock
            ensure_curl
            ensure_docker
            busybox_image
            emit_docker_env
            ;;
        status) have curl || die "curl missing"; status ;;
        env) emit_docker_env; emit_consul_env ;;
        -h|--help|help) usage ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
