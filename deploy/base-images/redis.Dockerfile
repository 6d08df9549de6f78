# Stand-in for redis:7.4-alpine where no registry answers: Debian bookworm's redis-server (7.0).
# Like the official image it runs as the unprivileged `redis` user (999:999) in /data, and it
# is reachable from other containers (see redis-server.sh).
ARG DEBIAN_BASE
FROM ${DEBIAN_BASE}

# The bookworm suite is the pin: the stand-in follows the host's mirror, as the Debian base does.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown 999:999 /data

COPY redis-server.sh /usr/local/bin/redis-server

WORKDIR /data
VOLUME ["/data"]
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
