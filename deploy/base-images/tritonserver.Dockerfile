# Stand-in for nvcr.io/nvidia/tritonserver:24.10-py3 where NVIDIA's registry can't be reached:
# the Python base plus the nvidia-pytriton wheel, which ships the same Triton 2.51 server and
# Python backend. Linked at /opt/tritonserver, it has the layout Dockerfile.triton relies on:
# bin/tritonserver and backends/python/{libtriton_python.so,triton_python_backend_utils.py}.
# No CUDA libraries beyond the runtime the wheel bundles: it serves on the CPU only.
ARG PYTHON_BASE
FROM ${PYTHON_BASE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Passed by scripts/base_images.py from Dockerfile.triton, so both use one release.
ARG PYTRITON_VERSION

# The wheel is taken for its server binary only: --no-deps keeps its Python packages out.
# The build fails here if the server cannot find a library it links.
RUN python3 -m venv /opt/pytriton \
    && /opt/pytriton/bin/pip install --no-cache-dir --no-deps "nvidia-pytriton==${PYTRITON_VERSION}" \
    && site="$(/opt/pytriton/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && ln -s "$site/pytriton/tritonserver" /opt/tritonserver \
    && ! ldd /opt/tritonserver/bin/tritonserver | grep "not found"

ENV PATH=/opt/tritonserver/bin:$PATH
