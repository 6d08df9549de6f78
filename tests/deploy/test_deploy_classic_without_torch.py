"""classic_edit's model path imports no torch, so it serves from an image that has none.

Its model.py is loaded as Triton's Python backend loads it (by file path), in a fresh interpreter
where torch and the libraries built on it can't be imported, with a small stand-in for
triton_python_backend_utils (which exists only inside Triton's stub). It is initialised from its
own config.pbtxt parameters and serves one request; tests/integration runs the real backend.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests import images

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"
HEAVY = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "peft")

SERVE_ONE_REQUEST = r"""
import base64, importlib.util, json, sys, types
import numpy as np

for name in HEAVY:
    sys.modules[name] = None  # `import torch` now raises ImportError

FINAL = 1

class Tensor:
    def __init__(self, name, data):
        self.name, self.data = name, data
    def as_numpy(self):
        return self.data

class TritonError:
    INVALID_ARG, CANCELLED, INTERNAL = "INVALID_ARG", "CANCELLED", "INTERNAL"
    def __init__(self, message, code="UNKNOWN"):
        self.text, self.code = message, code
    def message(self):
        return self.text

class InferenceResponse:
    def __init__(self, output_tensors=(), error=None):
        self.output_tensors, self.error = list(output_tensors), error

class Sender:
    def __init__(self):
        self.sent = []
    def send(self, response, flags=0):
        self.sent.append((response, flags))

class Request:
    def __init__(self, inputs):
        self.inputs, self.sender = inputs, Sender()
    def get_response_sender(self):
        return self.sender
    def request_id(self):
        return "no-torch-1"
    def is_cancelled(self):
        return False

pb = types.ModuleType("triton_python_backend_utils")
pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
pb.Tensor, pb.TritonError, pb.InferenceResponse = Tensor, TritonError, InferenceResponse
pb.get_input_tensor_by_name = lambda request, name: (
    Tensor(name, request.inputs[name]) if name in request.inputs else None
)
sys.modules["triton_python_backend_utils"] = pb

spec = importlib.util.spec_from_file_location("classic_edit_model", MODEL_PY)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.TritonPythonModel()
model.initialize({"model_config": json.dumps(CONFIG), "model_name": "classic_edit"})

request = Request({
    "IMAGES": np.array([base64.b64decode(IMAGE)], dtype=object),
    "PROMPT": np.array([b"make it black and white"], dtype=object),
})
model.execute([request])
final, flags = request.sender.sent[-1]
outputs = {t.name: t.data for t in final.output_tensors}
loaded = sorted(
    name for name, mod in sys.modules.items() if name.split(".")[0] in HEAVY and mod is not None
)
print(json.dumps({
    "flags": [f for _, f in request.sender.sent],
    "error": final.error.message() if final.error else None,
    "event": json.loads(outputs["EVENT"][0]) if "EVENT" in outputs else None,
    "image": base64.b64encode(bytes(outputs["IMAGE"][0])).decode() if "IMAGE" in outputs else None,
    "heavy_modules_loaded": loaded,
}))
"""


def config_parameters(model_dir: Path) -> dict[str, Any]:
    """config.pbtxt's parameters in the JSON shape Triton hands to initialize() (classic_edit's
    has none: its limits come from qie_engine/limits.py and the environment)."""
    text = (model_dir / "config.pbtxt").read_text()
    pairs = re.findall(r'key:\s*"(\w+)",\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text)
    return {"parameters": {key: {"string_value": value} for key, value in pairs}}


def serve_without_torch(model_dir: Path) -> subprocess.CompletedProcess[str]:
    script = "\n".join(
        [
            f"HEAVY = {HEAVY!r}",
            f"MODEL_PY = {str(model_dir / '1' / 'model.py')!r}",
            f"CONFIG = {config_parameters(model_dir)!r}",
            f"IMAGE = {base64.b64encode(images.jpeg_bytes(64, 48)).decode()!r}",
            SERVE_ONE_REQUEST,
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_classic_edit_loads_and_serves_with_torch_unimportable() -> None:
    done = serve_without_torch(REPOSITORY / "classic_edit")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is None
    assert result["flags"][-1] == 1 and result["flags"].count(1) == 1
    assert result["event"]["operations"] == ["grayscale"]
    pixels = np.asarray(images.decode(base64.b64decode(result["image"])).convert("RGB"))
    assert pixels.shape == (48, 64, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert result["heavy_modules_loaded"] == []


def test_the_same_check_refuses_the_qwen_model_path_which_needs_torch() -> None:
    """Negative control: the harness does catch a model path that imports torch."""
    done = serve_without_torch(REPOSITORY / "qwen_image_edit")
    assert done.returncode != 0
    assert "ImportError" in done.stderr or "ModuleNotFoundError" in done.stderr
    assert "torch" in done.stderr
