#!/usr/bin/env bash
# OMERO.web image: make sure the slurm-config.ini that the OMERO.biomero admin page edits
# exists. It lives on the biomero-config volume, which the worker mounts read-only and
# reads (BIOMERO_SLURM_CONFIG_FILE there too), so the page and the worker see one file. On the first start
# the file is seeded with the image's /etc/slurm-config.ini; after that it is never
# touched here: the admin page owns it.
#
#   BIOMERO_SLURM_CONFIG_FILE  the shared file (required)
#   BIOMERO_CONFIG_SEED        its first content (default /etc/slurm-config.ini)
set -euo pipefail

log() { printf '%s [45-biomero-config] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

main() {
    local target="${BIOMERO_SLURM_CONFIG_FILE:-}" seed="${BIOMERO_CONFIG_SEED:-/etc/slurm-config.ini}"
    [[ -n "$target" ]] || die "BIOMERO_SLURM_CONFIG_FILE is not set: name the shared" \
        "slurm-config.ini (e.g. /opt/biomero/config/slurm-config.ini)"
    if [[ -f "$target" ]]; then
        log "using $target"
        return 0
    fi
    local dir tmp
    dir="$(dirname -- "$target")"
    [[ -d "$dir" ]] || die "$dir does not exist: mount the biomero-config volume there"
    [[ -w "$dir" ]] || die "$dir is not writable by $(id -un): the OMERO.biomero admin page" \
        "could not save the config either; chown it to $(id -u):$(id -g)"
    [[ -f "$seed" ]] || die "$seed (the first content of $target) is missing"
    tmp="$(mktemp "$target.XXXXXX")"
    cp -- "$seed" "$tmp"
    chmod 644 "$tmp"
    # ln refuses an existing name: if something else created the file meanwhile, keep it.
    if ln -- "$tmp" "$target" 2>/dev/null; then
        log "seeded $target from $seed"
    else
        log "using $target (created meanwhile)"
    fi
    rm -f -- "$tmp"
}

main "$@"
