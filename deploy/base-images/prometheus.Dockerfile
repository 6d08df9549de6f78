# Stand-in for prom/prometheus:v2.55.1 where no registry answers: Debian bookworm's Prometheus
# (2.42), laid out as the official image: the server as entrypoint, /prometheus as the data
# volume, the `nobody` user (65534), and wget for the compose health check.
ARG DEBIAN_BASE
FROM ${DEBIAN_BASE}

# The bookworm suite is the pin: the stand-in follows the host's mirror, as the Debian base does.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus \
    && chown 65534:65534 /prometheus

WORKDIR /prometheus
VOLUME ["/prometheus"]
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
