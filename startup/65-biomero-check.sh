#!/usr/bin/env bash
# Refuse to start the node when slurm-config.ini is wrong: `biomero check --offline`
# validates the configuration without contacting the cluster and says what to fix.
#
#   BIOMERO_BASE_CONFIG  the image's config (default /etc/slurm-config.ini)
#   BIOMERO_CONFIG       optional override read after it (e.g. a mounted file)
#   BIOMERO_SLURM_CONFIG_FILE  the one file to read instead of both (what the
#                        OMERO.biomero admin page edits; docker-compose.yml sets it)
#   BIOMERO_BIN          the biomero command (default: biomero on PATH)
set -euo pipefail

log() { printf '%s [65-biomero-check] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

main() {
    local base="${BIOMERO_BASE_CONFIG:-/etc/slurm-config.ini}"
    local override="${BIOMERO_CONFIG:-}" biomero="${BIOMERO_BIN:-biomero}"
    local shared="${BIOMERO_SLURM_CONFIG_FILE:-}"
    [[ -f "$base" ]] || die "$base is missing: the image should ship it; rebuild the image"
    command -v "$biomero" >/dev/null || die "'$biomero' not found: is the venv on PATH?"

    local argv=("$biomero")
    if [[ -n "$shared" ]]; then
        # biomero reads this file alone; check exactly what the worker will read.
        [[ -f "$shared" ]] || die "BIOMERO_SLURM_CONFIG_FILE is $shared but no such file" \
            "exists: OMERO.web seeds it on its first start (is the biomero-config volume" \
            "mounted, and OMERO.web up?)"
        base="$shared"
        override=""
    elif [[ -n "$override" ]]; then
        [[ -f "$override" ]] || die "BIOMERO_CONFIG is $override but no such file exists:" \
            "mount it or unset BIOMERO_CONFIG"
        argv+=(--config "$override")
    fi
    argv+=(check --offline)

    log "checking $base${override:+ and $override}"
    if ! "${argv[@]}"; then
        die "slurm-config.ini is not valid (see the lines above); fix it and restart the worker"
    fi
    log "configuration is valid"
}

main "$@"
