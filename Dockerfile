# BIOMERO images from one Dockerfile, so the master, OMERO.web and the worker share one
# copy of scripts/, slurm-config.ini and every pin:
#   docker build --target server .   OMERO master with our scripts in lib/scripts/biomero
#   docker build --target web .      OMERO.web with the OMERO.biomero plugin
#   docker build .                   the worker (the last stage): OMERO.grid Processor-0
# Run: see docker-compose.yml and docs/deployment.md.
#
# Versions: deploy/versions.env (the ARG defaults below must equal it; the tests check).
# Downloads: pip only with --require-hashes against deploy/requirements/*.txt (or
# --no-index from wheels built here), curl only with a committed sha256.

ARG BIOMERO_VERSION=0.1.0

# --- zeroc-ice: built from the hash-pinned PyPI sdist with tools/build-zeroc-ice ---------
FROM openmicroscopy/omero-server:5.6.18 AS ice-build
# A build stage: nothing runs from it, only /wheels is copied out.
# hadolint ignore=DL3002
USER root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The base image's venv runs this Python; the Ice wheel and headers must match it.
ARG PYTHON_VERSION=3.11
ARG ZEROC_ICE_VERSION=3.6.5
RUN dnf -y install --setopt=install_weak_deps=False \
        gcc-c++ "python${PYTHON_VERSION}-devel" openssl-devel bzip2-devel \
    && dnf -y clean all \
    && rm -rf /var/cache/dnf
COPY deploy/requirements/zeroc-ice.txt deploy/requirements/build-py311.txt /tmp/requirements/
COPY --chmod=755 tools/build-zeroc-ice /usr/local/bin/build-zeroc-ice
RUN /opt/omero/server/venv3/bin/python -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
sys.exit(0 if v == '${PYTHON_VERSION}' else 'base image venv runs Python ' + v + ', not ${PYTHON_VERSION}')" \
    && /opt/omero/server/venv3/bin/python -m venv /tmp/build-venv \
    && /tmp/build-venv/bin/pip install --no-cache-dir --require-hashes --only-binary :all: \
        --no-deps -r /tmp/requirements/build-py311.txt \
    && /tmp/build-venv/bin/pip download --no-cache-dir --require-hashes --no-binary :all: \
        --no-deps -r /tmp/requirements/zeroc-ice.txt -d /tmp/sdist \
    && build-zeroc-ice --no-build-isolation /tmp/build-venv/bin/python \
        "/tmp/sdist/zeroc-ice-${ZEROC_ICE_VERSION}.tar.gz" /wheels

# --- OMERO.web wheels: every requirement fetched hash-checked; sdists (psycopg2) built ---
FROM openmicroscopy/omero-web-standalone:5.31.0 AS web-build
# hadolint ignore=DL3002
USER root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN dnf -y install --setopt=install_weak_deps=False gcc libpq-devel python3.12-devel \
    && dnf -y clean all \
    && rm -rf /var/cache/dnf
COPY deploy/requirements/web.txt deploy/requirements/build-py312.txt /tmp/requirements/
RUN /opt/omero/web/venv3/bin/python -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
sys.exit(0 if v == '3.12' else 'OMERO.web venv runs Python ' + v + ': deploy/requirements/web.txt is locked for 3.12, run tools/lock-requirements')" \
    && /opt/omero/web/venv3/bin/python -m venv /tmp/build-venv \
    && /tmp/build-venv/bin/pip install --no-cache-dir --require-hashes --only-binary :all: \
        --no-deps -r /tmp/requirements/build-py312.txt \
    && /tmp/build-venv/bin/pip wheel --no-cache-dir --require-hashes --no-deps \
        --no-build-isolation -r /tmp/requirements/web.txt -w /wheels

# --- OMERO master: the stock server plus the scripts users start from OMERO.web --------
FROM openmicroscopy/omero-server:5.6.18 AS server
ARG BIOMERO_VERSION
LABEL org.opencontainers.image.title="biomero-omeroserver" \
      org.opencontainers.image.description="OMERO.server master with the BIOMERO worker's scripts" \
      org.opencontainers.image.version="${BIOMERO_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/openmicroscopy/omero-server:5.6.18"
# The master lists and serves scripts from its own lib/scripts; Processor-0 (the
# worker) runs them. Same tree, same path as in the worker image.
COPY --chown=omero-server:omero-server scripts/ /opt/omero/server/OMERO.server/lib/scripts/biomero/
USER omero-server

# --- OMERO.web with OMERO.biomero ------------------------------------------------------------
FROM openmicroscopy/omero-web-standalone:5.31.0 AS web
ARG BIOMERO_VERSION
ARG OMERO_BIOMERO_VERSION=1.6.1
LABEL org.opencontainers.image.title="biomero-omeroweb" \
      org.opencontainers.image.description="OMERO.web with the OMERO.biomero plugin, set up for the BIOMERO worker" \
      org.opencontainers.image.version="${BIOMERO_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/openmicroscopy/omero-web-standalone:5.31.0"
USER root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=web-build /wheels/ /tmp/wheels/
# Nothing is fetched here: the wheels were hash-checked (or built) in web-build.
# omero-biomero-setup drops the plugin's omero.web.apps / top_links config into
# /opt/omero/web/config/, which the base image's start-up applies.
RUN /opt/omero/web/venv3/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && /opt/omero/web/venv3/bin/python -c "from importlib.metadata import version as v; \
assert v('omero-biomero') == '${OMERO_BIOMERO_VERSION}', v('omero-biomero')" \
    && /opt/omero/web/venv3/bin/omero-biomero-setup \
    && install -d -o omero-web -g omero-web -m 775 /opt/biomero/config
# The config the plugin's admin page edits is the file the worker reads: both mount
# the biomero-config volume at /opt/biomero/config (the worker read-only), and this
# image seeds it on its first start (45-biomero-config.sh). The folder is created here,
# owned by omero-web, so a new volume takes that owner when OMERO.web mounts it first.
COPY slurm-config.ini /etc/slurm-config.ini
COPY --chmod=755 startup/45-biomero-config.sh /startup/45-biomero-config.sh
USER omero-web
# No BIOMERO.importer in this stack: the plugin shows the analyzer only. The plugin's
# own settings (its admin page's JSON) live on the same volume, so they survive a
# recreated container.
ENV BIOMERO_SLURM_CONFIG_FILE=/opt/biomero/config/slurm-config.ini \
    OMERO_BIOMERO_CONFIG_FILE=/opt/biomero/config/biomero-config.json \
    OMERO_BIOMERO_GROUP_MAPPINGS_FILE=/opt/biomero/config/group-mappings.json \
    IMPORTER_ENABLED=false \
    ANALYZER_ENABLED=true
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["test", "-f", "/opt/biomero/config/slurm-config.ini"]

# --- the worker (default target: keep it last) -----------------------------------------------
FROM openmicroscopy/omero-server:5.6.18 AS worker

ARG BIOMERO_VERSION
ARG BIOFORMATS2RAW_VERSION=0.9.4
ARG BIOFORMATS2RAW_SHA256=855e13599df9643f8abdc861e7bada1f3e4e32cc519f684036b9581819eb9319

LABEL org.opencontainers.image.title="biomeroworker" \
      org.opencontainers.image.description="OMERO.grid Processor-0 worker that runs image analysis on Slurm clusters" \
      org.opencontainers.image.version="${BIOMERO_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/openmicroscopy/omero-server:5.6.18"

USER root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV VIRTUAL_ENV=/opt/omero/server/venv3
ENV PATH=/opt/omero/server/venv3/bin:/opt/bioformats2raw/bin:$PATH

# SSH client; Java for bioformats2raw. Every Python package below is a wheel: no compiler.
RUN dnf -y install --setopt=install_weak_deps=False \
        openssh-clients java-11-openjdk-headless unzip \
    && dnf -y clean all \
    && rm -rf /var/cache/dnf

# bioformats2raw: what `omero zarr export --bf` runs to write OME-Zarr straight from the
# binary repository (/OMERO is mounted here). The worker's own export reads pixels
# through the OMERO API and does not need it; it is here for admins and for upstream
# BIOMERO scripts that call it.
RUN curl -fsSL -o /tmp/bioformats2raw.zip \
        "https://github.com/glencoesoftware/bioformats2raw/releases/download/v${BIOFORMATS2RAW_VERSION}/bioformats2raw-${BIOFORMATS2RAW_VERSION}.zip" \
    && echo "${BIOFORMATS2RAW_SHA256}  /tmp/bioformats2raw.zip" | sha256sum --check --strict - \
    && unzip -q /tmp/bioformats2raw.zip -d /opt \
    && mv "/opt/bioformats2raw-${BIOFORMATS2RAW_VERSION}" /opt/bioformats2raw \
    && rm /tmp/bioformats2raw.zip \
    && bioformats2raw --version

# zeroc-ice from ice-build, then omero-py, omero-cli-zarr and our dependencies, every
# one hash-checked (deploy/requirements/worker.txt, made by tools/lock-requirements).
COPY --from=ice-build /wheels/ /tmp/wheels/
COPY deploy/requirements/worker.txt /tmp/requirements/
RUN "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --require-hashes --only-binary :all: \
        --no-deps -r /tmp/requirements/worker.txt \
    && rm -rf /tmp/wheels /tmp/requirements

# The project itself: built from this context, nothing fetched.
COPY pyproject.toml README.md /tmp/biomeroworker-src/
COPY biomeroworker/ /tmp/biomeroworker-src/biomeroworker/
RUN "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --no-index --no-deps --no-build-isolation \
        /tmp/biomeroworker-src \
    && rm -rf /tmp/biomeroworker-src \
    && biomero --help >/dev/null

# Script processes get their environment from omero/processor.py. Ours extends the
# original (kept beside it as omero/_processor_upstream.py) instead of replacing it, so
# an omero-py upgrade keeps both sides' fixes; run this again after reinstalling omero-py.
COPY processor.py /opt/biomero/processor.py
RUN "$VIRTUAL_ENV/bin/python" -m biomeroworker.omero.processor_env install /opt/biomero/processor.py \
    && "$VIRTUAL_ENV/bin/python" -c "import omero.processor as p; assert p.ProcessI.__name__ == 'BiomeroProcessI', p.ProcessI"

COPY slurm-config.ini /etc/slurm-config.ini
COPY --chown=omero-server:omero-server scripts/ /opt/omero/server/OMERO.server/lib/scripts/biomero/

# Start-up hooks (run in name order by the base image's entrypoint). A worker
# must never touch the OMERO database, so the base image's 60-database.sh goes.
COPY --chmod=755 startup/10-biomero-ssh.sh \
     startup/65-biomero-check.sh startup/70-biomero-ice-node.sh startup/99-run.sh /startup/
COPY --chmod=755 startup/biomero-healthcheck /usr/local/bin/biomero-healthcheck
RUN rm -f /startup/60-database.sh \
    && chmod 644 /etc/slurm-config.ini

USER omero-server
WORKDIR /opt/omero/server
ENV OMERO_WORKER_NAME=biomeroworker \
    BIOMERO_RUN_DIR=/tmp/biomero

HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["/usr/local/bin/biomero-healthcheck"]
