#!/usr/bin/env bash
# Write this worker's IceGrid node config (etc/<worker>.cfg) and the client
# config (etc/ice.config) from the environment.
#
#   OMERO_WORKER_NAME        node name; the master's nodedescriptors must use it (required)
#   CONFIG_omero_master_host the OMERO master's host name or address (required)
#   OMERO_WORKER_HOST        name to resolve for our own address (default: hostname)
#   OMERO_WORKER_EXTERNAL    set on a worker that runs on another host: the name or
#                            address the master reaches us at; needs OMERO_WORKER_PORT
#   OMERO_WORKER_PORT        fixed node port (required when external, optional otherwise)
#   OMERO_MASTER_REGISTRY_PORT (4061)  OMERO_MASTER_ROUTER_PORT (4063)
#   OMERODIR                 OMERO.server directory (default /opt/omero/server/OMERO.server)
# Files go to etc/ and, when it exists, etc/templates/ as well, so the
# `omero admin rewrite` that `omero node start` runs renders the same content.
set -euo pipefail

log() { printf '%s [70-biomero-ice-node] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

OMERODIR="${OMERODIR:-/opt/omero/server/OMERO.server}"
REGISTRY_PORT="${OMERO_MASTER_REGISTRY_PORT:-4061}"
ROUTER_PORT="${OMERO_MASTER_ROUTER_PORT:-4063}"

# First IPv4 address of a name (an address resolves to itself), else any address.
resolve() {
    local name="$1" addr
    addr="$(getent ahostsv4 "$name" 2>/dev/null | awk 'NR == 1 { print $1 }')" || true
    if [[ -z "$addr" ]]; then
        addr="$(getent hosts "$name" 2>/dev/null | awk 'NR == 1 { print $1 }')" || true
    fi
    printf '%s\n' "$addr"
}

require_port() {
    local name="$1" value="$2"
    if [[ ! "$value" =~ ^[0-9]{1,5}$ ]] || ((10#$value < 1 || 10#$value > 65535)); then
        die "$name must be a port number 1-65535, got '$value'"
    fi
}

# Write a file in one step so a half-written config is never read.
publish() {
    local target="$1" content="$2" tmp
    tmp="$(mktemp "$target.XXXXXX")"
    printf '%s\n' "$content" >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$target"
}

node_config() {
    local worker="$1" bind="$2" port="$3" external="$4"
    local endpoint="tcp -h $bind${port:+ -p $port}"
    printf '%s\n' \
        "# Written by 70-biomero-ice-node.sh at every start; edits here are lost." \
        "IceGrid.Node.Name=$worker" \
        "IceGrid.Node.Endpoints=$endpoint"
    if [[ -n "$external" ]]; then
        printf '%s\n' "IceGrid.Node.PublishedEndpoints=tcp -h $external -p $port"
    fi
    printf '%s\n' \
        "IceGrid.Node.Data=var/$worker" \
        "IceGrid.Node.Output=var/log" \
        "Ice.StdOut=var/log/$worker.out" \
        "Ice.StdErr=var/log/$worker.err"
}

client_config() {
    local master_name="$1" master="$2"
    printf '%s\n' \
        "# Written by 70-biomero-ice-node.sh at every start; master: $master_name" \
        "Ice.Default.Router=OMERO.Glacier2/router:tcp -p $ROUTER_PORT -h $master" \
        "Ice.Default.Locator=IceGrid/Locator:tcp -p $REGISTRY_PORT -h $master"
}

main() {
    local worker="${OMERO_WORKER_NAME:-}" master_name="${CONFIG_omero_master_host:-}"
    local external="${OMERO_WORKER_EXTERNAL:-}" port="${OMERO_WORKER_PORT:-}"
    [[ -n "$worker" ]] || die "OMERO_WORKER_NAME is not set: use the name the master's" \
        "omero.server.nodedescriptors gives Processor-0 (e.g. biomeroworker)"
    [[ "$worker" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] \
        || die "OMERO_WORKER_NAME '$worker' may hold only letters, digits, '.', '_' and '-'"
    [[ -n "$master_name" ]] || die "CONFIG_omero_master_host is not set: the OMERO master's host name"
    require_port OMERO_MASTER_REGISTRY_PORT "$REGISTRY_PORT"
    require_port OMERO_MASTER_ROUTER_PORT "$ROUTER_PORT"
    if [[ -n "$external" ]]; then
        [[ -n "$port" ]] || die "OMERO_WORKER_EXTERNAL is set, so OMERO_WORKER_PORT must be too:" \
            "the master reaches an external worker on one fixed, published port"
    fi
    [[ -z "$port" ]] || require_port OMERO_WORKER_PORT "$port"

    local master worker_host bind
    master="$(resolve "$master_name")"
    [[ -n "$master" ]] || die "master '$master_name' does not resolve (getent hosts):" \
        "check CONFIG_omero_master_host and that both containers share a network"
    worker_host="${OMERO_WORKER_HOST:-$(hostname)}"
    bind="$(resolve "$worker_host")"
    [[ -n "$bind" ]] || die "worker host '$worker_host' does not resolve (getent hosts):" \
        "set OMERO_WORKER_HOST to a name of this container"
    if [[ -n "$external" && -z "$(resolve "$external")" ]]; then
        die "OMERO_WORKER_EXTERNAL '$external' does not resolve (getent hosts)"
    fi

    [[ -d "$OMERODIR/etc" ]] || die "$OMERODIR/etc does not exist: is OMERODIR right?"
    mkdir -p "$OMERODIR/var/$worker" "$OMERODIR/var/log"
    local node client dir
    node="$(node_config "$worker" "$bind" "$port" "$external")"
    client="$(client_config "$master_name" "$master")"
    for dir in "$OMERODIR/etc" "$OMERODIR/etc/templates"; do
        [[ -d "$dir" ]] || continue
        publish "$dir/$worker.cfg" "$node"
        publish "$dir/ice.config" "$client"
    done
    log "node $worker listens on $bind${port:+:$port}${external:+ (published as $external:$port)};" \
        "master $master_name is $master"
}

main "$@"
