#!/usr/bin/env bash
# Run OMERO with a BIOMERO worker as one podman pod, the SSH material and the
# passwords passed as podman secrets (never as bind mounts or image layers).
#
#   deploy/podman/biomero-pod.sh up      create the secrets, the pod and its containers
#   deploy/podman/biomero-pod.sh down    remove the pod and the secrets (volumes stay)
#   deploy/podman/biomero-pod.sh metabase   provision Metabase again (the pod runs)
#
# Settings come from the environment, or from the file BIOMERO_ENV_FILE names
# (KEY=VALUE lines, read as data, never sourced). See docs/deployment.md.
#   BIOMERO_SSH_CONFIG BIOMERO_SSH_KNOWN_HOSTS BIOMERO_SSH_KEY   files on this host (required)
#   OMERO_DB_PASSWORD OMERO_ROOT_PASSWORD BIOMERO_DB_PASSWORD    (required)
#   BIOMERO_OMERO_USER (root) BIOMERO_OMERO_PASSWORD (OMERO_ROOT_PASSWORD)  supervisor's OMERO login
#   BIOMERO_IMAGE (localhost/biomeroworker:latest)  OMERO_WORKER_NAME (biomeroworker)
#   BIOMERO_SERVER_IMAGE (localhost/biomero-omeroserver:latest)
#   BIOMERO_WEB_IMAGE (localhost/biomero-omeroweb:latest)   the three Dockerfile targets
#   POSTGRES_VERSION (16)  OMERO_WEB_PORT (4080)  BIOMERO_POD (biomero)  PODMAN (podman)
#   BIOMERO_SECRET_UID / BIOMERO_SECRET_GID (1000 / 1000): owner of the SSH secret files
#     inside the worker, the base image's omero-server account, which reads them
#   BIOMERO_CONFIG_WAIT_S (120): how long to wait for OMERO.web to seed slurm-config.ini
#   BIOMERO_DASHBOARDS (0): 1 adds Metabase (METABASE_IMAGE, host port METABASE_PORT 3000)
#     and provisions it with biomeroworker.deploy.metabase, which then needs
#     METABASE_ADMIN_EMAIL and METABASE_ADMIN_PASSWORD (METABASE_WAIT_S, 300)
#   METABASE_SECRET_KEY METABASE_SITE_URL METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID
#   METABASE_IMPORTS_DB_PAGE_DASHBOARD_ID   OMERO.biomero's dashboards, as in .env.example
set -euo pipefail

log() { printf '%s [biomero-pod] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SECRETS_DIR=/run/secrets/biomero-ssh
SHARED_CONFIG=/opt/biomero/config/slurm-config.ini
SECRET_NAMES=(biomero-ssh-config biomero-ssh-known-hosts biomero-ssh-key biomero-ssh-key-pub
    omero-db-password omero-root-password biomero-db-password biomero-sqlalchemy-url
    biomero-omero-password metabase-admin-password metabase-secret-key)
# The Metabase docker-compose.yml runs (the tests check they are the same).
METABASE_IMAGE_DEFAULT="docker.io/metabase/metabase@sha256:f7b5dc52c21aaa2dca910a450e7e6119a975090ce9fc80726aa0742882ca176c"
# OMERO.biomero's BIOMERO page signs a token with this key on every load and fails on an
# empty one; without dashboards nothing checks it (see docker-compose.yml).
NO_DASHBOARDS_KEY=no-dashboards-in-this-biomero-stack

load_env_file() {
    local file="$1" line key value
    [[ -f "$file" ]] || die "BIOMERO_ENV_FILE $file does not exist"
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || die "$file: cannot read '$line'"
        key="${BASH_REMATCH[1]}"
        value="${BASH_REMATCH[2]}"
        [[ -n "${!key:-}" ]] || export "$key=$value"
    done <"$file"
}

require() {
    local name
    for name in "$@"; do
        [[ -n "${!name:-}" ]] || die "$name is not set (environment or BIOMERO_ENV_FILE)"
    done
}

require_files() {
    local name
    for name in "$@"; do
        [[ -f "${!name}" ]] || die "$name=${!name} is not a file"
    done
}

podman_() { "${PODMAN:-podman}" "$@"; }

# Secrets are replaced on every `up` so a rotated key or password takes effect.
secret_from_file() {
    podman_ secret rm "$1" >/dev/null 2>&1 || true
    podman_ secret create "$1" "$2" >/dev/null
}

secret_from_value() {
    podman_ secret rm "$1" >/dev/null 2>&1 || true
    printf '%s' "$2" | podman_ secret create "$1" - >/dev/null
}

# Mounted secrets belong to root unless told otherwise; the hooks run as omero-server
# (uid 1000 in openmicroscopy/omero-server), which must be able to read them: mode 0400
# for that user alone.
ssh_secret() {
    printf '%s,target=%s,uid=%s,gid=%s,mode=0400' "$1" "$SECRETS_DIR/$2" \
        "${BIOMERO_SECRET_UID:-1000}" "${BIOMERO_SECRET_GID:-1000}"
}

create_secrets() {
    local key_name
    key_name="$(basename -- "$BIOMERO_SSH_KEY")"
    secret_from_file biomero-ssh-config "$BIOMERO_SSH_CONFIG"
    secret_from_file biomero-ssh-known-hosts "$BIOMERO_SSH_KNOWN_HOSTS"
    secret_from_file biomero-ssh-key "$BIOMERO_SSH_KEY"
    SSH_SECRETS=(
        --secret "$(ssh_secret biomero-ssh-config config)"
        --secret "$(ssh_secret biomero-ssh-known-hosts known_hosts)"
        --secret "$(ssh_secret biomero-ssh-key "$key_name")"
    )
    if [[ -f "$BIOMERO_SSH_KEY.pub" ]]; then
        secret_from_file biomero-ssh-key-pub "$BIOMERO_SSH_KEY.pub"
        SSH_SECRETS+=(--secret "$(ssh_secret biomero-ssh-key-pub "$key_name.pub")")
    fi
    secret_from_value omero-db-password "$OMERO_DB_PASSWORD"
    secret_from_value omero-root-password "$OMERO_ROOT_PASSWORD"
    secret_from_value biomero-db-password "$BIOMERO_DB_PASSWORD"
    # The tracking database listens on 5433 because the pod shares one network.
    secret_from_value biomero-sqlalchemy-url \
        "postgresql+psycopg2://biomero:$BIOMERO_DB_PASSWORD@127.0.0.1:5433/biomero"
    # The supervisor's OMERO login (admin with Sudo); root's unless BIOMERO_OMERO_* say otherwise.
    secret_from_value biomero-omero-password "${BIOMERO_OMERO_PASSWORD:-$OMERO_ROOT_PASSWORD}"
    create_metabase_secrets
}

# OMERO.web signs with the embedding key; the provisioning also logs in to Metabase.
create_metabase_secrets() {
    if [[ -n "${METABASE_SECRET_KEY:-}" ]]; then
        secret_from_value metabase-secret-key "$METABASE_SECRET_KEY"
    fi
    if [[ -n "${METABASE_ADMIN_PASSWORD:-}" ]]; then
        secret_from_value metabase-admin-password "$METABASE_ADMIN_PASSWORD"
    fi
}

dashboards() { [[ "${BIOMERO_DASHBOARDS:-0}" == 1 ]]; }

# OMERO.web's dashboard settings: the key as a secret, the rest plain (ids, a URL).
web_dashboard_options() {
    WEB_DASHBOARDS=(
        -e "METABASE_SITE_URL=${METABASE_SITE_URL:-}"
        -e "METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID=${METABASE_WORKFLOWS_DB_PAGE_DASHBOARD_ID:-0}"
        -e "METABASE_IMPORTS_DB_PAGE_DASHBOARD_ID=${METABASE_IMPORTS_DB_PAGE_DASHBOARD_ID:-0}"
    )
    if [[ -n "${METABASE_SECRET_KEY:-}" ]]; then
        WEB_DASHBOARDS+=(--secret "metabase-secret-key,type=env,target=METABASE_SECRET_KEY")
    else
        WEB_DASHBOARDS+=(-e "METABASE_SECRET_KEY=$NO_DASHBOARDS_KEY")
    fi
}

# One-shot: first admin, tracking database, embedding (biomeroworker.deploy.metabase),
# run from the worker image, in the foreground so `up` reports how it ended.
provision_metabase() {
    local pod="$1"
    local -a key=()
    [[ -z "${METABASE_SECRET_KEY:-}" ]] ||
        key=(--secret "metabase-secret-key,type=env,target=METABASE_SECRET_KEY")
    log "provisioning Metabase (waits up to ${METABASE_WAIT_S:-300} s for it to start)"
    podman_ run --rm --pod "$pod" --name "$pod-metabase-setup" \
        --entrypoint /opt/omero/server/venv3/bin/python --no-healthcheck \
        -e METABASE_URL=http://127.0.0.1:3000 -e "METABASE_ADMIN_EMAIL=$METABASE_ADMIN_EMAIL" \
        -e "METABASE_WAIT_S=${METABASE_WAIT_S:-300}" -e "METABASE_SITE_URL=${METABASE_SITE_URL:-}" \
        --secret metabase-admin-password,type=env,target=METABASE_ADMIN_PASSWORD \
        --secret biomero-sqlalchemy-url,type=env,target=SQLALCHEMY_URL \
        "${key[@]}" \
        "${BIOMERO_IMAGE:-localhost/biomeroworker:latest}" -m biomeroworker.deploy.metabase ||
        die "Metabase was not provisioned (the reason is above); the rest of the pod runs." \
            "Fix it, then run '$0 metabase'"
}

run_containers() {
    local pod="$1" worker="${OMERO_WORKER_NAME:-biomeroworker}"
    local pg="docker.io/library/postgres:${POSTGRES_VERSION:-16}"
    local -a ports=(--publish 4063:4063 --publish 4064:4064 --publish "${OMERO_WEB_PORT:-4080}:4080")
    ! dashboards || ports+=(--publish "${METABASE_PORT:-3000}:3000")
    podman_ pod create --name "$pod" --hostname "$worker" "${ports[@]}"

    podman_ run -d --pod "$pod" --name "$pod-database" --restart unless-stopped \
        -e POSTGRES_USER=omero -e POSTGRES_DB=omero \
        -e POSTGRES_PASSWORD_FILE=/run/secrets/omero-db-password \
        --secret omero-db-password \
        -v omero-database:/var/lib/postgresql/data "$pg"

    podman_ run -d --pod "$pod" --name "$pod-biomero-database" --restart unless-stopped \
        -e POSTGRES_USER=biomero -e POSTGRES_DB=biomero \
        -e POSTGRES_PASSWORD_FILE=/run/secrets/biomero-db-password \
        --secret biomero-db-password \
        -v biomero-database:/var/lib/postgresql/data "$pg" postgres -p 5433

    # The master image carries our scripts (Dockerfile target `server`).
    podman_ run -d --pod "$pod" --name "$pod-omeroserver" --restart unless-stopped \
        -e CONFIG_omero_db_host=127.0.0.1 -e CONFIG_omero_db_user=omero \
        -e CONFIG_omero_db_name=omero -e CONFIG_omero_master_host=127.0.0.1 \
        -e "CONFIG_omero_server_nodedescriptors=master:Blitz-0,Indexer-0,PixelData-0,DropBox,MonitorServer,FileServer,Storm,Tables-0 $worker:Processor-0" \
        --secret omero-db-password,type=env,target=CONFIG_omero_db_pass \
        --secret omero-root-password,type=env,target=ROOTPASS \
        -v omero-data:/OMERO \
        "${BIOMERO_SERVER_IMAGE:-localhost/biomero-omeroserver:latest}"

    if dashboards; then
        podman_ run -d --pod "$pod" --name "$pod-metabase" --restart unless-stopped \
            -e MB_DB_FILE=/metabase-data/metabase.db -v metabase-data:/metabase-data \
            "${METABASE_IMAGE:-$METABASE_IMAGE_DEFAULT}"
    fi

    # OMERO.web with OMERO.biomero (target `web`); it seeds the shared slurm-config.ini.
    web_dashboard_options
    podman_ run -d --pod "$pod" --name "$pod-omeroweb" --restart unless-stopped \
        -e OMEROHOST=127.0.0.1 -e "BIOMERO_SLURM_CONFIG_FILE=$SHARED_CONFIG" \
        "${WEB_DASHBOARDS[@]}" \
        -v biomero-config:/opt/biomero/config \
        "${BIOMERO_WEB_IMAGE:-localhost/biomero-omeroweb:latest}"
    wait_for_shared_config "$pod-omeroweb"

    # Named as the instructions type it: `podman exec biomeroworker ...`.
    podman_ run -d --pod "$pod" --name biomeroworker --restart unless-stopped \
        -e "OMERO_WORKER_NAME=$worker" -e CONFIG_omero_master_host=127.0.0.1 \
        -e PERSISTENCE_MODULE=eventsourcing_sqlalchemy \
        -e "BIOMERO_SLURM_CONFIG_FILE=$SHARED_CONFIG" \
        -e "BIOMERO_SSH_SECRETS_DIR=$SECRETS_DIR" \
        "${SSH_SECRETS[@]}" \
        --secret biomero-sqlalchemy-url,type=env,target=SQLALCHEMY_URL \
        -e OMERO_HOST=127.0.0.1 -e OMERO_PORT=4064 -e "OMERO_USER=${BIOMERO_OMERO_USER:-root}" \
        --secret biomero-omero-password,type=env,target=OMERO_PASSWORD \
        -v biomero-config:/opt/biomero/config:ro \
        -v biomero-var:/opt/omero/server/OMERO.server/var \
        -v omero-data:/OMERO \
        "${BIOMERO_IMAGE:-localhost/biomeroworker:latest}"
}

# The worker refuses to start without the shared slurm-config.ini that OMERO.web seeds.
wait_for_shared_config() {
    local web="$1" waited=0 limit="${BIOMERO_CONFIG_WAIT_S:-120}"
    until podman_ exec "$web" test -f "$SHARED_CONFIG" >/dev/null 2>&1; do
        ((waited < limit)) || die "$web has not created $SHARED_CONFIG after ${limit} s:" \
            "see '${PODMAN:-podman} logs $web'"
        sleep 2
        waited=$((waited + 2))
    done
}

up() {
    require BIOMERO_SSH_CONFIG BIOMERO_SSH_KNOWN_HOSTS BIOMERO_SSH_KEY \
        OMERO_DB_PASSWORD OMERO_ROOT_PASSWORD BIOMERO_DB_PASSWORD
    require_files BIOMERO_SSH_CONFIG BIOMERO_SSH_KNOWN_HOSTS BIOMERO_SSH_KEY
    [[ "${BIOMERO_DASHBOARDS:-0}" =~ ^[01]$ ]] || die "BIOMERO_DASHBOARDS must be 0 or 1"
    ! dashboards || require METABASE_ADMIN_EMAIL METABASE_ADMIN_PASSWORD
    local pod="${BIOMERO_POD:-biomero}"
    create_secrets
    log "secrets created; starting pod $pod"
    run_containers "$pod"
    log "pod $pod is up: OMERO.web on port ${OMERO_WEB_PORT:-4080}"
    if dashboards; then
        provision_metabase "$pod"
        log "Metabase is ready on port ${METABASE_PORT:-3000}"
    fi
}

# Provision Metabase again in a running pod (after fixing what stopped it in `up`).
metabase() {
    require METABASE_ADMIN_EMAIL METABASE_ADMIN_PASSWORD
    create_metabase_secrets
    provision_metabase "${BIOMERO_POD:-biomero}"
}

down() {
    local pod="${BIOMERO_POD:-biomero}" name
    podman_ pod rm --force --ignore "$pod"
    for name in "${SECRET_NAMES[@]}"; do
        podman_ secret rm "$name" >/dev/null 2>&1 || true
    done
    log "pod $pod and its secrets removed; volumes kept"
}

main() {
    [[ -z "${BIOMERO_ENV_FILE:-}" ]] || load_env_file "$BIOMERO_ENV_FILE"
    case "${1:-}" in
        up) up ;;
        down) down ;;
        metabase) metabase ;;
        *) die "usage: $0 up|down|metabase" ;;
    esac
}

main "$@"
