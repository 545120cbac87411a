#!/usr/bin/env bash
# Copy the SSH material the worker needs into the omero-server user's ~/.ssh.
#
# Sources, the first one holding a `config` wins:
#   $BIOMERO_SSH_MOUNT (/tmp/.ssh)                  docker compose: $HOME/.ssh:/tmp/.ssh:ro
#   $BIOMERO_SSH_SECRETS_DIR (/run/secrets/biomero-ssh)  podman secrets, see deploy/podman/
# Destination: $BIOMERO_SSH_DEST (/opt/omero/server/.ssh).
# Only `config`, the keys its IdentityFile lines name, their `.pub` files and
# `known_hosts` are copied: never the whole host ~/.ssh.
# Host key checking stays on: `StrictHostKeyChecking no|off` refuses to start unless
# BIOMERO_SSH_ALLOW_NO_HOSTKEY_CHECK=1 (then it warns on every start).
# First-use mode: with `StrictHostKeyChecking accept-new` in the config, known_hosts may
# be missing; ~/.ssh/known_hosts then lives in $BIOMERO_SSH_STATE_DIR
# (/opt/omero/server/OMERO.server/var/ssh, the worker's var volume), seeded with the
# mounted known_hosts lines, so a key saved on first use is still verified after the
# container is recreated.
set -euo pipefail

log() { printf '%s [10-biomero-ssh] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

DEST="${BIOMERO_SSH_DEST:-/opt/omero/server/.ssh}"
STATE_DIR="${BIOMERO_SSH_STATE_DIR:-/opt/omero/server/OMERO.server/var/ssh}"
DEFAULT_KEYS=(id_ed25519 id_ecdsa id_rsa)

find_source() {
    local candidates=("${BIOMERO_SSH_MOUNT:-/tmp/.ssh}"
        "${BIOMERO_SSH_SECRETS_DIR:-/run/secrets/biomero-ssh}")
    local dir
    for dir in "${candidates[@]}"; do
        if [[ -f "$dir/config" ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    die "no SSH config found in ${candidates[*]}: mount your ssh directory at /tmp/.ssh" \
        "(docker) or pass the podman secrets (deploy/podman/biomero-pod.sh)"
}

# Basenames of the IdentityFile entries in an ssh config, one per line.
identity_files() {
    local keyword value
    while read -r keyword value; do
        [[ "${keyword,,}" == identityfile || "${keyword,,}" == identityfile=* ]] || continue
        if [[ "$keyword" == *=* ]]; then
            value="${keyword#*=}${value:+ $value}"
        fi
        value="${value#=}"
        value="${value#"${value%%[![:space:]]*}"}"
        value="${value//\"/}"
        [[ -n "$value" ]] && basename -- "$value"
    done <"$1"
    return 0
}

check_host_key_policy() {
    local config="$1"
    if grep -Eiq '^[[:space:]]*StrictHostKeyChecking[[:space:]=]+"?(no|off)"?[[:space:]]*$' "$config"; then
        if [[ "${BIOMERO_SSH_ALLOW_NO_HOSTKEY_CHECK:-0}" == 1 ]]; then
            log "WARNING: ssh config turns host key checking off (StrictHostKeyChecking no)."
            log "WARNING: anyone who can intercept the connection can impersonate the cluster."
            return 0
        fi
        die "ssh config sets 'StrictHostKeyChecking no': remove it and put the cluster's" \
            "host key in known_hosts (ssh-keyscan -p PORT HOST >> known_hosts), or set" \
            "BIOMERO_SSH_ALLOW_NO_HOSTKEY_CHECK=1 to accept the risk"
    fi
}

accepts_new_keys() {
    grep -Eiq '^[[:space:]]*StrictHostKeyChecking[[:space:]=]+"?accept-new"?[[:space:]]*$' "$1"
}

# accept-new: a persistent known_hosts that keeps what was saved on first use; lines of
# the mounted known_hosts that it lacks are added, nothing is ever removed.
persistent_known_hosts() {
    local src="$1" line
    install -d -m 700 "$STATE_DIR"
    [[ -f "$STATE_DIR/known_hosts" ]] || install -m 600 /dev/null "$STATE_DIR/known_hosts"
    if [[ -f "$src/known_hosts" ]]; then
        while IFS= read -r line || [[ -n "$line" ]]; do
            [[ -z "$line" ]] && continue
            grep -qxF -- "$line" "$STATE_DIR/known_hosts" || printf '%s\n' "$line" >>"$STATE_DIR/known_hosts"
        done <"$src/known_hosts"
    fi
    ln -sfn "$STATE_DIR/known_hosts" "$DEST/known_hosts"
}

keys_to_copy() {
    local src="$1" named
    named="$(identity_files "$src/config" | sort -u)"
    if [[ -n "$named" ]]; then
        printf '%s\n' "$named"
        return 0
    fi
    local key
    for key in "${DEFAULT_KEYS[@]}"; do
        [[ -f "$src/$key" ]] && printf '%s\n' "$key"
    done
    return 0
}

# IdentityFile paths from the host (/home/me/.ssh/id_x) mean nothing in here:
# point every one of them at the copy in our own ~/.ssh. UserKnownHostsFile lines
# likewise name the one known_hosts this hook provides.
write_config() {
    local src="$1" dst="$2"
    sed -E -e 's#^([[:space:]]*[Ii][Dd][Ee][Nn][Tt][Ii][Tt][Yy][Ff][Ii][Ll][Ee])([[:space:]=]+)"?([^"]*/)?([^/"]+)"?[[:space:]]*$#\1\2~/.ssh/\4#' \
        -e 's#^([[:space:]]*[Uu][Ss][Ee][Rr][Kk][Nn][Oo][Ww][Nn][Hh][Oo][Ss][Tt][Ss][Ff][Ii][Ll][Ee])([[:space:]=]+).*$#\1\2~/.ssh/known_hosts#' \
        "$src" >"$dst"
    chmod 644 "$dst"
}

main() {
    local src
    src="$(find_source)"
    log "using SSH material from $src"
    check_host_key_policy "$src/config"
    local first_use=0
    accepts_new_keys "$src/config" && first_use=1
    if [[ ! -f "$src/known_hosts" ]] && ((!first_use)); then
        die "$src/known_hosts is missing: host keys are checked. Add the cluster's line" \
            "(biomero check prints it), or set 'StrictHostKeyChecking accept-new' in the" \
            "ssh config to save the key on first use"
    fi

    local keys=() key
    mapfile -t keys < <(keys_to_copy "$src")
    ((${#keys[@]} > 0)) || die "ssh config names no IdentityFile and $src holds none of" \
        "${DEFAULT_KEYS[*]}"
    for key in "${keys[@]}"; do
        [[ -f "$src/$key" ]] || die "ssh config names IdentityFile '$key' but $src/$key" \
            "does not exist: mount or pass that key"
    done

    install -d -m 700 "$DEST"
    write_config "$src/config" "$DEST/config"
    if ((first_use)); then
        persistent_known_hosts "$src"
        log "StrictHostKeyChecking accept-new: an unknown host's key is saved on first use" \
            "to $STATE_DIR/known_hosts and verified from then on"
    else
        install -m 644 "$src/known_hosts" "$DEST/known_hosts"
    fi
    for key in "${keys[@]}"; do
        install -m 600 "$src/$key" "$DEST/$key"
        if [[ -f "$src/$key.pub" ]]; then
            install -m 644 "$src/$key.pub" "$DEST/$key.pub"
        fi
    done
    log "copied config, known_hosts and key(s) ${keys[*]} to $DEST"
}

main "$@"
