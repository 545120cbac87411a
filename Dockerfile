# BIOMERO worker: an OMERO.grid node that takes the Processor-0 role.
# Build:  docker build --build-arg BIOFORMATS2RAW_SHA256=... --build-arg ZEROC_ICE_WHEEL_SHA256=... .
# Run:    see docker-compose.yml and docs/deployment.md
FROM openmicroscopy/omero-server:5.6.18

ARG BIOMERO_VERSION=0.1.0
# The base image's venv runs this Python; the Ice wheel and headers must match it.
ARG PYTHON_VERSION=3.11
ARG ZEROC_ICE_WHEEL_URL=https://github.com/glencoesoftware/zeroc-ice-py-linux-x86_64/releases/download/20240202/zeroc_ice-3.6.5-cp311-cp311-manylinux_2_28_x86_64.whl
ARG ZEROC_ICE_WHEEL_SHA256=
ARG OMERO_PY_VERSION=5.23.0
ARG OMERO_CLI_ZARR_VERSION=0.9.0
ARG BIOFORMATS2RAW_VERSION=0.9.4
ARG BIOFORMATS2RAW_SHA256=

LABEL org.opencontainers.image.title="biomeroworker" \
      org.opencontainers.image.description="OMERO.grid Processor-0 worker that runs image analysis on Slurm clusters" \
      org.opencontainers.image.version="${BIOMERO_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/openmicroscopy/omero-server:5.6.18"

USER root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV VIRTUAL_ENV=/opt/omero/server/venv3
ENV PATH=/opt/omero/server/venv3/bin:/opt/bioformats2raw/bin:$PATH

# SSH client; compilers and headers for psycopg2 and blosc; Java for bioformats2raw.
RUN dnf -y install --setopt=install_weak_deps=False \
        openssh-clients gcc "python${PYTHON_VERSION}-devel" libpq-devel blosc-devel \
        java-11-openjdk-headless unzip \
    && dnf -y clean all \
    && rm -rf /var/cache/dnf

RUN "$VIRTUAL_ENV/bin/python" -c "import sys; v = '%d.%d' % sys.version_info[:2]; \
sys.exit(0 if v == '${PYTHON_VERSION}' else 'base image venv runs Python ' + v + ', not ${PYTHON_VERSION}: set PYTHON_VERSION and ZEROC_ICE_WHEEL_URL')"

RUN if [ -z "${BIOFORMATS2RAW_SHA256}" ]; then \
        echo "set --build-arg BIOFORMATS2RAW_SHA256 (sha256 of bioformats2raw-${BIOFORMATS2RAW_VERSION}.zip, see docs/deployment.md)" >&2; \
        exit 1; \
    fi \
    && curl -fsSL -o /tmp/bioformats2raw.zip \
        "https://github.com/glencoesoftware/bioformats2raw/releases/download/v${BIOFORMATS2RAW_VERSION}/bioformats2raw-${BIOFORMATS2RAW_VERSION}.zip" \
    && echo "${BIOFORMATS2RAW_SHA256}  /tmp/bioformats2raw.zip" | sha256sum --check --strict - \
    && unzip -q /tmp/bioformats2raw.zip -d /opt \
    && mv "/opt/bioformats2raw-${BIOFORMATS2RAW_VERSION}" /opt/bioformats2raw \
    && rm /tmp/bioformats2raw.zip \
    && bioformats2raw --version

RUN if [ -z "${ZEROC_ICE_WHEEL_SHA256}" ]; then \
        echo "set --build-arg ZEROC_ICE_WHEEL_SHA256 (sha256 of the zeroc-ice wheel, see docs/deployment.md)" >&2; \
        exit 1; \
    fi \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir \
        "zeroc-ice @ ${ZEROC_ICE_WHEEL_URL}#sha256=${ZEROC_ICE_WHEEL_SHA256}" \
        "omero-py==${OMERO_PY_VERSION}" \
        "omero-cli-zarr==${OMERO_CLI_ZARR_VERSION}"

# The project itself.
COPY pyproject.toml README.md /tmp/biomeroworker-src/
COPY biomeroworker/ /tmp/biomeroworker-src/biomeroworker/
RUN "$VIRTUAL_ENV/bin/pip" install --no-cache-dir /tmp/biomeroworker-src \
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
COPY --chmod=755 startup/10-biomero-ssh.sh startup/65-biomero-check.sh \
     startup/70-biomero-ice-node.sh startup/99-run.sh /startup/
COPY --chmod=755 startup/biomero-healthcheck /usr/local/bin/biomero-healthcheck
RUN rm -f /startup/60-database.sh \
    && chmod 644 /etc/slurm-config.ini

USER omero-server
WORKDIR /opt/omero/server
ENV OMERO_WORKER_NAME=biomeroworker \
    BIOMERO_RUN_DIR=/tmp/biomero

HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["/usr/local/bin/biomero-healthcheck"]
