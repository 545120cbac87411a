#!/usr/bin/env bash
# Run the OMERO node and the BIOMERO supervisor side by side, as the container's
# last start-up step. SIGTERM/SIGINT go to both; when either one exits, the other
# is stopped too so the container exits and its restart policy takes over.
#
#   OMERO_WORKER_NAME       node name (required)
#   OMERO_NODE_CMD          node command (default: omero node $OMERO_WORKER_NAME start --foreground)
#   BIOMERO_SUPERVISOR_CMD  supervisor command (default: biomero supervise)
#   BIOMERO_RUN_DIR         where the pid files go (default /tmp/biomero)
#   OMERO_SERVER_HOME       working directory (default /opt/omero/server)
# The two *_CMD values are split on whitespace into an argument list; no shell
# ever interprets them.
set -euo pipefail

log() { printf '%s [99-run] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

RUN_DIR="${BIOMERO_RUN_DIR:-/tmp/biomero}"
NODE_PID=""
SUPERVISOR_PID=""
STOPPING=0

stop_children() {
    local signal="$1" pid
    for pid in "$SUPERVISOR_PID" "$NODE_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "-$signal" "$pid" 2>/dev/null || true
        fi
    done
}

# shellcheck disable=SC2317  # invoked by trap
on_signal() {
    STOPPING=1
    log "received $1: stopping the supervisor and the node"
    stop_children TERM
}

wait_all() {
    local pid
    for pid in "$SUPERVISOR_PID" "$NODE_PID"; do
        while kill -0 "$pid" 2>/dev/null; do
            wait "$pid" 2>/dev/null || true
        done
    done
    rm -f "$RUN_DIR/supervisor.pid" "$RUN_DIR/node.pid"
}

main() {
    local worker="${OMERO_WORKER_NAME:-}"
    [[ -n "$worker" ]] || die "OMERO_WORKER_NAME is not set"
    local node_cmd=() supervisor_cmd=()
    read -r -a node_cmd <<<"${OMERO_NODE_CMD:-omero node $worker start --foreground}"
    read -r -a supervisor_cmd <<<"${BIOMERO_SUPERVISOR_CMD:-biomero supervise}"
    ((${#node_cmd[@]} > 0)) || die "OMERO_NODE_CMD is empty"
    ((${#supervisor_cmd[@]} > 0)) || die "BIOMERO_SUPERVISOR_CMD is empty"

    mkdir -p "$RUN_DIR"
    cd "${OMERO_SERVER_HOME:-/opt/omero/server}"
    trap 'on_signal TERM' TERM
    trap 'on_signal INT' INT

    "${supervisor_cmd[@]}" &
    SUPERVISOR_PID=$!
    printf '%s\n' "$SUPERVISOR_PID" >"$RUN_DIR/supervisor.pid"
    log "supervisor started (pid $SUPERVISOR_PID): ${supervisor_cmd[*]}"

    "${node_cmd[@]}" &
    NODE_PID=$!
    printf '%s\n' "$NODE_PID" >"$RUN_DIR/node.pid"
    log "node $worker started (pid $NODE_PID)"

    local status=0
    wait -n "$SUPERVISOR_PID" "$NODE_PID" || status=$?
    if ((STOPPING)); then
        wait_all
        log "stopped"
        exit 0
    fi
    log "a child exited (status $status): stopping the other one"
    stop_children TERM
    wait_all
    exit $((status == 0 ? 1 : status))
}

main "$@"
