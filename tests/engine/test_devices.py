"""Each instance on its own GPU: bound before anything loads, quantized there, loaded in turn.

No GPU here: torch.cuda is stood in for by a fake that remembers the current device, and
from_pretrained by a recorder that asks the libraries' own quantizers where they would place
the weights (they read the current device), then stops the load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.quantizers.auto import DiffusersAutoQuantizer
from filelock import FileLock, Timeout
from transformers.quantizers.auto import AutoHfQuantizer

from qie_engine.instance_device import LOAD_LOCK, pick_device
from tests.engine.tiny_editors import dev_editor


class FakeCuda:
    """The parts of torch.cuda the load path asks, with one current device per process."""

    def __init__(self, events: list[tuple[str, Any]]) -> None:
        self.events = events
        self.current = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None: (9, 0))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d=None: "NVIDIA H100")

    def set_device(self, device: Any) -> None:
        self.current = torch.device(device).index
        self.events.append(("set_device", self.current))


class StopLoad(Exception):
    """Raised by the recorder once it has seen what the load would do."""


def lock_is_held() -> bool:
    """Whether another instance would have to wait for the host's load lock now."""
    lock = FileLock(LOAD_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def record_loads(monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, Any]]) -> None:
    def from_pretrained(*_args: Any, quantization_config: Any = None, **_kwargs: Any) -> Any:
        mapping = quantization_config.quant_mapping if quantization_config else {}
        placed = {
            "transformer": DiffusersAutoQuantizer.from_config(mapping["transformer"]),
            "text_encoder": AutoHfQuantizer.from_config(mapping["text_encoder"]),
        }
        where = {name: q.update_device_map(None)[""] for name, q in placed.items()}
        events.append(("from_pretrained", where))
        events.append(("load lock held", lock_is_held()))
        raise StopLoad

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", from_pretrained)


def test_an_instance_binds_its_gpu_before_reading_weights_and_quantizes_onto_it(
    tiny_edit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, Any]] = []
    FakeCuda(events).install(monkeypatch)
    record_loads(monkeypatch, events)
    # What model.py passes for the instance Triton placed on the second GPU.
    with pytest.raises(StopLoad):
        dev_editor(tiny_edit_dir, device="cuda:1", quantization="nf4")
    assert events == [
        ("set_device", 1),
        # diffusers' bitsandbytes quantizer (transformer) and transformers' (text encoder)
        ("from_pretrained", {"transformer": "cuda:1", "text_encoder": 1}),
        ("load lock held", True),
    ]
    assert not lock_is_held()  # a failed load lets the next instance go


def test_cuda_without_an_index_is_the_current_device() -> None:
    events: list[tuple[str, Any]] = []
    fake = FakeCuda(events)
    fake.current = 3
    with pytest.MonkeyPatch.context() as monkeypatch:
        fake.install(monkeypatch)
        assert pick_device("cuda") == torch.device("cuda", 3)
        assert pick_device("auto") == torch.device("cuda", 3)
        assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cpu") == torch.device("cpu")
