#!/bin/sh
# mcp-bridge/dind:<suite> and mcp-bridge/podman:<suite> entrypoint: make an
# unprivileged-but-capable container able to run an inner engine, then exec it: dockerd,
# or where the image has Podman instead, `podman system service` (its Docker-compatible
# API).
#
# Needed because this image may run WITHOUT `--privileged` (on the project's CI machine
# `--privileged` fails: the outer capability bounding set lacks CAP_SYS_RESOURCE). It is
# run there with --cap-add ALL --cap-drop SYS_RESOURCE, seccomp/apparmor/systempaths
# unconfined and --device-cgroup-rule 'a *:* rwm' (compose/dind/compose.ci.yaml). Docker
# then still mounts /sys and the cgroup file systems read-only; with CAP_SYS_ADMIN they can
# be remounted read-write, which is what runc inside needs. Under --privileged they are
# already read-write and every step below is a no-op.
#
# Arguments are passed on to dockerd after the two listeners.
set -eu

log() { echo "dind-entrypoint: $*" >&2; }

remount_rw() {  # mount point
    # a bind remount works for bind mounts (cgroup v1 hierarchies); a plain remount for
    # file systems mounted in this namespace (/sys)
    mount -o remount,bind,rw "$1" 2>/dev/null || mount -o remount,rw "$1" 2>/dev/null \
        || log "could not remount $1 read-write (running without CAP_SYS_ADMIN?)"
}

is_ro() {  # mount point: 0 when it is mounted read-only
    awk -v m="$1" '$2 == m { split($4, o, ","); ro = (o[1] == "ro") } END { exit !ro }' /proc/mounts
}

if is_ro /sys; then remount_rw /sys; fi
# Without --privileged or systempaths=unconfined (the API has no such option: only the
# docker CLI and compose turn it into empty MaskedPaths/ReadonlyPaths) /proc/sys is a
# read-only bind; newer engines write sysctls of their containers' interfaces there.
if is_ro /proc/sys; then remount_rw /proc/sys; fi

# securityfs (AppArmor) and a tmpfs /tmp, as Docker's own dind script does
if [ -d /sys/kernel/security ] && ! grep -qs ' /sys/kernel/security ' /proc/mounts; then
    mount -t securityfs none /sys/kernel/security 2>/dev/null || true
fi
if ! grep -qs ' /tmp ' /proc/mounts; then
    mount -t tmpfs none /tmp 2>/dev/null || true
fi

if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    # cgroup v2 (unified): one hierarchy, in its own cgroup namespace
    if is_ro /sys/fs/cgroup; then remount_rw /sys/fs/cgroup; fi
    # Move every process out of the root group (otherwise enabling controllers for
    # children fails with EBUSY), then delegate all controllers to the children.
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
    sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \
        >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
        || log "could not enable the cgroup v2 controllers for nested containers"
    log "cgroup v2: $(cat /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null)"
else
    # cgroup v1 (or hybrid): the tmpfs at /sys/fs/cgroup and every hierarchy below it
    if [ -d /sys/fs/cgroup ] && is_ro /sys/fs/cgroup; then remount_rw /sys/fs/cgroup; fi
    awk '($3 == "cgroup" || $3 == "cgroup2") && $2 ~ "^/sys/fs/cgroup/" { print $2 }' /proc/mounts |
        while read -r m; do
            if is_ro "$m"; then remount_rw "$m"; fi
        done
    log "cgroup v1: $(awk '$3 == "cgroup" { n++ } END { print n + 0 }' /proc/mounts) hierarchies"
fi

if ! command -v dockerd >/dev/null && command -v podman >/dev/null; then
    if [ -n "${DIND_TLS_DIR:-}" ]; then
        log "DIND_TLS_DIR is set, but podman system service serves no TLS: refusing to start"
        exit 1
    fi
    # Podman keeps its run state under /run and takes a /run that outlived its
    # processes for a live system: a tmpfs makes a restarted container a rebooted host.
    # (It hides whatever the outer engine mounted under /run: nothing is, in this image.)
    mount -t tmpfs -o mode=0755 none /run 2>/dev/null || log "could not mount a tmpfs on /run"
    # What podman-restart.service does at boot where systemd runs.
    podman start --all --filter restart-policy=always >&2 || :
    log "$(podman --version), Docker-compatible API on tcp://0.0.0.0:2375"
    # catatonit as PID 1 reaps what Podman's exited helpers leave behind.
    exec catatonit -- podman system service --time=0 tcp://0.0.0.0:2375 "$@"
fi

# a pid file left by a killed dockerd would stop the next start
rm -f /var/run/docker.pid /run/docker/containerd/containerd.pid 2>/dev/null || true

if [ -n "${DIND_TLS_DIR:-}" ]; then
    # mutual TLS on 2376: only clients with a certificate of this CA get in
    exec dockerd -H unix:///var/run/docker.sock -H tcp://0.0.0.0:2376 --tlsverify \
        --tlscacert="$DIND_TLS_DIR/ca.pem" --tlscert="$DIND_TLS_DIR/server-cert.pem" \
        --tlskey="$DIND_TLS_DIR/server-key.pem" "$@"
fi
# --tls=false says "no TLS" on purpose (dockerd otherwise delays its start to warn)
exec dockerd -H unix:///var/run/docker.sock -H tcp://0.0.0.0:2375 --tls=false "$@"
