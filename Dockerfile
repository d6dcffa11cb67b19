# syntax=docker/dockerfile:1
#
# du-exporter container image.
#
#   docker build -t du-exporter .
#   docker run -d --name du-exporter -p 9995:9995 \
#       -v /:/host:ro -v du-data:/var/lib/du-exporter du-exporter
#
# The host filesystem is mounted read-only at /host and scanned from there
# (series are labelled /host/...).  The database lives on the du-data volume
# and survives container restarts.  Pick what to scan with DU_EXPORTER_*
# variables or flags, e.g.
#   docker run ... du-exporter --analyzed-path /host/home --dir-level 3
# or mount a config file (see config-sqlite.yml):
#   docker run ... -v "$PWD/config.yml:/etc/du-exporter/config.yml:ro" \
#       du-exporter --config /etc/du-exporter/config.yml
# What to scan is the image's CMD (--analyzed-path /host and an ignore list
# for /host's pseudo filesystems): any arguments you pass replace it, so a
# mounted config file decides alone.  The DU_EXPORTER_* variables set below
# (database, listen address, JSON logs) take precedence over a config file
# (flag > env > file): override them with -e.
#
# The exporter runs as uid 65532 and only sees what that user may read.  To
# measure every directory (like the systemd unit's CAP_DAC_READ_SEARCH), run
# it as uid 0 with that one capability and nothing else:
#   docker run ... --user 0:0 --cap-drop ALL --cap-add DAC_READ_SEARCH \
#       --security-opt no-new-privileges du-exporter
# (the state directory is group-0 writable for exactly this case).
# --read-only works too when combined with --tmpfs /tmp.

# --- build: wheel of this project + dependencies into a venv ---------------
# bookworm (glibc 2.36): the scandir-rs wheels need glibc >= 2.34, so no
# Rust toolchain is needed.  Keep both stages on the same image so the
# venv's interpreter path stays valid.  BASE_IMAGE is any Debian bookworm
# image whose `python` is 3.11 (with venv); CI passes one built from
# Debian's packages, because it reaches no container registry.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# gcc and the C library headers build the C reader (scan-engine c).  The
# python images carry Python.h; an image without it gets python3-dev.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && if ! python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then \
        apt-get install -y --no-install-recommends python3-dev; \
    fi \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY src ./src
# setup.py builds the C reader as optional (a host without a compiler
# still installs): here it is required, so a C reader that did not build
# or does not load fails the image build.
WORKDIR /
RUN /opt/venv/bin/pip install --no-cache-dir /src \
    && /opt/venv/bin/python -c "import du_exporter.scan._fastscan"

# --- runtime ---------------------------------------------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="du-exporter" \
      org.opencontainers.image.description="Prometheus exporter for exact per-directory disk usage, served from SQLite" \
      org.opencontainers.image.licenses="MIT"

# Non-root user; the state directory is owned by it and writable by group 0
# (for --user 0:0 --cap-drop ALL, see above).
RUN groupadd --system --gid 65532 du-exporter \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
        --home-dir /var/lib/du-exporter --shell /usr/sbin/nologin du-exporter \
    && install -d -o 65532 -g 0 -m 0770 /var/lib/du-exporter

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DU_EXPORTER_DB_PATH=/var/lib/du-exporter/du-exporter.db \
    DU_EXPORTER_BIND_ADDRESS=0.0.0.0:9995 \
    DU_EXPORTER_LOG_FORMAT=json

VOLUME /var/lib/du-exporter
WORKDIR /var/lib/du-exporter
USER 65532:65532
EXPOSE 9995

# du-exporter healthcheck probes /-/healthy with the same settings as the
# exporter (DU_EXPORTER_* variables: bind address, web config with TLS).
# A config file passed as an argument is not seen here: then also pass
#   --health-cmd 'du-exporter healthcheck --config /etc/du-exporter/config.yml'
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["du-exporter", "healthcheck"]

# SIGTERM stops cleanly (the running scan is abandoned, nothing half
# visible); docker stop waits 10 s by default, use --stop-timeout 30 to
# match the systemd unit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["du-exporter"]
# The host's pseudo filesystems are under /host, so the default ignore list
# (/proc, /dev, /sys, /run) is moved there.
CMD ["--analyzed-path", "/host", "--ignore-dirs", "/host/proc,/host/dev,/host/sys,/host/run"]
