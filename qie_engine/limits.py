"""The request limits that the gateway and every model both enforce, written once.

Each is a setting of the gateway and a parameter of the models, by the same name: an
environment variable of that name overrides it (for the models, when Triton starts). The README's
tables, .env.example, docker-compose.yaml and the Kubernetes manifests state these defaults; a
test checks that they agree with this file (tests/deploy/test_limits_stated_once.py).
"""

from __future__ import annotations

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # one image's bytes (413)
MAX_PIXELS = 4096 * 4096  # one image's pixels, read from its header (422 image_too_large)
MAX_PROMPT_CHARS = 1000  # a prompt's (or negative prompt's) characters (422 prompt_too_long)
