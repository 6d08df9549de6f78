"""The device a model instance runs on: picked, bound before anything loads, loaded in turn.

Triton starts one instance per visible GPU, each told its device (`cuda:N`). Naming the device
is not enough: bitsandbytes and transformers place quantized weights on the *current* CUDA
device, and torchao's capability checks read it too, so every instance would quantize onto
GPU 0. `bind` makes cuda:N current before the first weight is read.

The instances also start together, and `from_pretrained` stages a whole pipeline in host memory
(about 54 GiB in bf16) until it is placed on its GPU. `one_load_at_a_time` makes the GPU
instances of one host read their weights in turn, through a file lock the whole container sees.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LOAD_LOCK = Path(tempfile.gettempdir()) / "qie-engine-load.lock"


def pick_device(requested: str) -> torch.device:
    """auto, cpu, cuda or cuda:N; a CUDA device always comes back with its index."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def bind(device: torch.device) -> None:
    """Make the instance's GPU the current CUDA device, for every library that reads it."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


@contextmanager
def one_load_at_a_time(device: torch.device) -> Iterator[None]:
    """Hold the host's load lock while a GPU instance reads its weights; a CPU instance needs
    none (there is one, and it keeps its weights in host memory anyway)."""
    if device.type != "cuda":
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(LOAD_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another instance is reading its weights into host memory; %s waits", device)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
