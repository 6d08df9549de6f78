"""QUANTIZATION and CPU_OFFLOAD: which GPU each memory mode is for, checked before any load.

Quantization goes through diffusers' own PipelineQuantizationConfig, so weights are quantized as
they are read (a 24 GB card never holds the bf16 transformer). Modes and what they target:

- none: bf16 everywhere, about 54 GiB of weights: an 80 GB card (H100, A100 80GB).
- fp8: the transformer in FP8 (torchao, dynamic activations, per-row scales), about 20 GB,
  the text encoder stays bf16: a 48 GB card. Needs compute capability 8.9+ (Ada, Hopper).
- int8: the transformer in int8 weight-only (torchao), about 20 GB: a 48 GB card of any
  generation, and the CPU (torchao has a CPU kernel for it).
- nf4: transformer and text encoder in 4-bit NF4 (bitsandbytes), about 17 GB: a 24 GB card.
"""

from __future__ import annotations

from typing import Any

import torch

from qie_engine.errors import EngineError
from qie_engine.qwen_settings import OffloadMode, QuantizationMode

FP8_CAPABILITY = (8, 9)


def _gpu_only(mode: str, needs: str, instead: str) -> EngineError:
    return EngineError(f"{mode} needs {needs}, and this instance runs on the CPU; {instead}")


def check_memory_modes(quantization: QuantizationMode, offload: OffloadMode, device: Any) -> None:
    """Refuse at load what this device cannot run, naming the mode and what to use instead."""
    on_cuda = torch.device(device).type == "cuda"
    if offload != "none" and not on_cuda:
        raise _gpu_only(
            f"CPU_OFFLOAD={offload}",
            "a CUDA GPU (it moves weights between the GPU and host memory)",
            "set CPU_OFFLOAD=none",
        )
    if quantization == "fp8":
        if not on_cuda:
            raise _gpu_only(
                "QUANTIZATION=fp8",
                "a CUDA GPU of compute capability 8.9 or newer (L4, L40S, RTX 4090, H100, H200)",
                "use QUANTIZATION=int8 (any GPU, or the CPU) or none",
            )
        capability = torch.cuda.get_device_capability(torch.device(device))
        if capability < FP8_CAPABILITY:
            name = torch.cuda.get_device_name(torch.device(device))
            raise EngineError(
                f"QUANTIZATION=fp8 needs compute capability 8.9 or newer; {name} has "
                f"{capability[0]}.{capability[1]}. Use QUANTIZATION=int8 instead"
            )
    if quantization == "nf4" and not on_cuda:
        raise _gpu_only(
            "QUANTIZATION=nf4",
            "a CUDA GPU (bitsandbytes' 4-bit kernels)",
            "use QUANTIZATION=int8 or none",
        )
    if quantization in ("fp8", "int8"):
        _require("torchao", quantization)
    if quantization == "nf4":
        _require("bitsandbytes", quantization)


def _require(package: str, mode: str) -> None:
    try:
        __import__(package)
    except ImportError as exc:
        raise EngineError(
            f"QUANTIZATION={mode} needs the {package} package ({exc}); install the engine extra"
        ) from None


def _torchao_config(mode: QuantizationMode) -> Any:
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    if mode == "fp8":
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    return Int8WeightOnlyConfig()


def pipeline_quantization(mode: QuantizationMode) -> Any | None:
    """diffusers' PipelineQuantizationConfig for from_pretrained; None for bf16."""
    if mode == "none":
        return None
    from diffusers import BitsAndBytesConfig, TorchAoConfig
    from diffusers.quantizers import PipelineQuantizationConfig

    mapping: dict[str, Any]
    if mode in ("fp8", "int8"):
        mapping = {"transformer": TorchAoConfig(_torchao_config(mode))}
        return PipelineQuantizationConfig(quant_mapping=mapping)
    from transformers import BitsAndBytesConfig as TextBitsAndBytesConfig

    four_bit = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": torch.bfloat16,
    }
    mapping = {
        "transformer": BitsAndBytesConfig(**four_bit),
        "text_encoder": TextBitsAndBytesConfig(**four_bit),
    }
    return PipelineQuantizationConfig(quant_mapping=mapping)


def quantize_built(pipe: Any, mode: QuantizationMode) -> None:
    """Quantize a pipeline built in memory (no folder to load from) with the same torchao config.

    The full-size benchmark builds its random-weight model on the GPU; from_pretrained would need
    54 GiB on disk first. bitsandbytes quantizes while loading only, so nf4 needs a folder.
    """
    if mode == "none":
        return
    if mode == "nf4":
        raise EngineError("QUANTIZATION=nf4 applies while loading: give MODEL_ID, not a pipeline")
    from torchao.quantization import quantize_

    quantize_(pipe.transformer, _torchao_config(mode))


def describe_quantization(pipe: Any) -> str:
    """The transformer's weight type as loaded, e.g. Int8Tensor or Parameter."""
    weight = pipe.transformer.transformer_blocks[0].attn.to_q.weight
    return type(weight).__name__
