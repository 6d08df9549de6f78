#!/usr/bin/env bash
# Start tritonserver on model_repository/. The one start command for `make run`, the tests and
# Dockerfile.triton. It uses NVIDIA's tritonserver when one is installed (the NGC image), else
# the binary in the nvidia-pytriton wheel, with a Python-backend directory assembled beside it.
#
# Environment:
#   TRITON_MODELS       models to load, comma-separated (default: classic_edit,qwen_image_edit)
#   TRITON_HTTP_PORT    HTTP port (default 8003: the gateway owns 8000)
#   TRITON_GRPC_PORT    gRPC port (default 8001)
#   TRITON_METRICS_PORT Prometheus metrics port (default 8002)
#   TRITON_ADDRESS      the address all three listen on (default 0.0.0.0, for a container whose
#                       ports only its network reaches; `make run` and the tests use 127.0.0.1)
#   TRITON_CONFIG_NAME  model config variant, e.g. "cpu" (default: cpu when no GPU is visible)
#   PYTHON              interpreter whose site-packages the models import from (default: python3)
#   MODEL_ID, DEVICE, ... any model parameter (see model_repository/*/config.pbtxt)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
models="${TRITON_MODELS:-classic_edit,qwen_image_edit}"

if [[ -n "${TRITONSERVER_BIN:-}" ]]; then
  server="$TRITONSERVER_BIN"
elif [[ -x /opt/tritonserver/bin/tritonserver ]]; then
  server=/opt/tritonserver/bin/tritonserver
else
  wheel="$("$python" -c 'import importlib.util as u; s = u.find_spec("pytriton"); print(s.submodule_search_locations[0] if s else "")')"
  if [[ -z "$wheel" ]]; then
    echo "start_triton: no tritonserver found; run 'make venv' or install nvidia-pytriton" >&2
    exit 1
  fi
  server="$wheel/tritonserver/bin/tritonserver"
  pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  backends="$root/.triton/backends"
  mkdir -p "$backends/python"
  for f in libtriton_python.so triton_python_backend_utils.py; do
    ln -sf "$wheel/tritonserver/backends/python/$f" "$backends/python/$f"
  done
  ln -sf "$wheel/tritonserver/python_backend_stubs/$pyver/triton_python_backend_stub" \
    "$backends/python/triton_python_backend_stub"
  backend_args=(--backend-directory="$backends")
  # The stub links libpython dynamically: make it find this interpreter's, not the system's.
  libdir="$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# The models import qie_engine from the repo and their packages from this interpreter.
site="$("$python" -c 'import site; print(":".join(site.getsitepackages()))')"
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"

config_name="${TRITON_CONFIG_NAME:-}"
if [[ -z "$config_name" ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
  config_name=cpu
fi

load_args=()
IFS=',' read -r -a model_list <<<"$models"
for m in "${model_list[@]}"; do
  [[ -n "$m" ]] && load_args+=(--load-model="$m")
done

# A SIGTERM or Ctrl-C is passed on to this process group: tritonserver and its model stubs.
# tritonserver stops taking requests, and each stub stops its running edit at the end of the
# step (tritonserver alone would wait up to its exit timeout for the edit to finish).
"$server" \
  --model-repository="${MODEL_REPOSITORY:-$root/model_repository}" \
  --model-control-mode=explicit "${load_args[@]}" \
  ${config_name:+--model-config-name="$config_name"} \
  ${backend_args[@]+"${backend_args[@]}"} \
  --http-address="${TRITON_ADDRESS:-0.0.0.0}" --http-port="${TRITON_HTTP_PORT:-8003}" \
  --grpc-address="${TRITON_ADDRESS:-0.0.0.0}" --grpc-port="${TRITON_GRPC_PORT:-8001}" \
  --metrics-address="${TRITON_ADDRESS:-0.0.0.0}" --metrics-port="${TRITON_METRICS_PORT:-8002}" \
  --allow-metrics=true --allow-gpu-metrics=true \
  --log-verbose="${TRITON_LOG_VERBOSE:-0}" \
  --exit-timeout-secs="${TRITON_EXIT_TIMEOUT:-10}" &
server_pid=$!
trap 'trap "" TERM INT; kill -TERM 0' TERM INT
# wait returns early when a trapped signal arrives: wait again for the server's own exit status.
status=0
wait "$server_pid" || status=$?
while kill -0 "$server_pid" 2>/dev/null; do
  wait "$server_pid" || status=$?
done
exit "$status"
