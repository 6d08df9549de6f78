# Stand-in for python:3.12-slim-bookworm where no registry answers: Debian bookworm's own
# Python (3.11, which the gateway supports), with venv and `python` on PATH as in the official
# image. scripts/base_images.py builds it on the Debian base it imports with debootstrap.
ARG DEBIAN_BASE
FROM ${DEBIAN_BASE}

# The bookworm suite is the pin: the stand-in follows the host's mirror, as the Debian base does.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/*

CMD ["python3"]
