"""The development stack: what `make run`, the tests and the benchmarks share to start Triton,
Redis, gateways and the compose stack, each on free ports, and to stop them leaving nothing.

  processes      children in process groups of their own, free ports
  triton         tritonserver (scripts/start_triton.sh), and one streamed request to it
  redis          redis-server, with the faults the tests cause
  gateways       the gateway as a process or as a thread of this process
  compose        the compose stack; docker_engine starts the engine, base_images the bases
  containers     the stack the container tests and benchmarks start
  console        the progress lines the launchers print
"""
