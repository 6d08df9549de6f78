"""The full-size Qwen-Image-Edit architecture with random weights, built in place, no download.

Sizes are the published configs, checked against the classes in diffusers 0.42 and transformers 5:

- transformer: Qwen-Image-Edit's `transformer/config.json` (QwenImageTransformer2DModel, 20.4 B
  parameters); 2511 adds `zero_cond_t: true` (used for --variant plus).
- text encoder: Qwen2.5-VL-7B-Instruct's `config.json` (Qwen2_5_VLForConditionalGeneration,
  8.3 B parameters with the 0.68 B vision tower). transformers' own Qwen2_5_VLConfig defaults
  are NOT the 7B (its text defaults are hidden 8192, 80 layers), so every size is explicit here.
- VAE: AutoencoderKLQwenImage's defaults, which are Qwen-Image's `vae/config.json` (0.13 B).
- processor: Qwen2.5-VL's preprocessor (min_pixels 3136, max_pixels 12845056, patch 14, merge 2).
- scheduler: the FlowMatchEulerDiscreteScheduler settings the model ships with.

No tokenizer can be downloaded, so the tokenizer is qie_engine.tiny_model's byte-level one, padded
to the real vocabulary so Qwen's special tokens keep their real ids (151643...). It has no BPE
merges: each byte of text is one token, so prompts are 3-4x longer in tokens than with Qwen's
tokenizer; the image tokens, which dominate the sequence, are the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

TRANSFORMER = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}
# Qwen's special tokens, in the ids Qwen2.5-VL uses (tokenizer_config.json's added_tokens).
SPECIAL_TOKENS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
TEXT = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 28,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
VAE = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}
IMAGE_PROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2}
# Qwen-Image-Edit's scheduler/scheduler_config.json (the same values as qie_engine.tiny_model's).
SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}
# `shrink=True`: the same builder with small widths and depths (vocabulary, special ids, processor
# and scheduler unchanged), so the full-size assembly can be checked end to end on a CPU.
SHRUNK = {
    "transformer": {
        "num_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 3,
        "joint_attention_dim": 32,
        "axes_dims_rope": (4, 6, 6),
    },
    "text": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]},
    },
    "vision": {
        "depth": 2,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_heads": 2,
        "out_hidden_size": 32,
        "fullatt_block_indexes": [1],
    },
    "vae": {"base_dim": 8, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1},
}
# Published parameter counts, for the plan check (billions).
EXPECTED_PARAMS_B = {"transformer": 20.43, "text_encoder": 8.29, "vae": 0.127}


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Parameters are created in `dtype` (bf16: 20 B parameters would not fit in float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def real_size_tokenizer() -> Any:
    """The tiny model's byte-level tokenizer, padded so special tokens have Qwen's real ids."""
    from transformers import Qwen2Tokenizer

    from qie_engine.tiny_model import _byte_level_vocab

    vocab = _byte_level_vocab()
    first_special = min(SPECIAL_TOKENS.values())
    # Fillers are never produced: with no merges, BPE only emits single byte symbols.
    vocab.update({f"<|unused_{i}|>": i for i in range(len(vocab), first_special)})
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    for token, wanted in SPECIAL_TOKENS.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != wanted:  # pragma: no cover - a tokenizers change would break the ids
            raise RuntimeError(f"{token} got id {got}, Qwen uses {wanted}")
    return tokenizer


def processor(tokenizer: Any) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=IMAGE_PROCESSOR["min_pixels"],
            max_pixels=IMAGE_PROCESSOR["max_pixels"],
            patch_size=IMAGE_PROCESSOR["patch_size"],
            merge_size=IMAGE_PROCESSOR["merge_size"],
        ),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )


def text_encoder_config(shrink: bool = False) -> Any:
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={**TEXT, **(SHRUNK["text"] if shrink else {})},
        vision_config={**VISION, **(SHRUNK["vision"] if shrink else {})},
        image_token_id=SPECIAL_TOKENS["<|image_pad|>"],
        video_token_id=SPECIAL_TOKENS["<|video_pad|>"],
        vision_start_token_id=SPECIAL_TOKENS["<|vision_start|>"],
        vision_end_token_id=SPECIAL_TOKENS["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_full_pipeline(
    variant: str = "edit",
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    shrink: bool = False,
) -> Any:
    """The full-size pipeline, each module created directly on `device` in `dtype`, random init.

    device="meta" builds it without memory (for counting parameters); it cannot run then.
    shrink=True cuts widths and depths only (SHRUNK), to run this very builder on a CPU.
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = real_size_tokenizer()
    transformer_config: dict[str, Any] = {
        **TRANSFORMER,
        **(SHRUNK["transformer"] if shrink else {}),
    }
    if variant == "plus":
        transformer_config["zero_cond_t"] = True  # Qwen-Image-Edit-2511's transformer config
    with torch.device(device), default_dtype(dtype):
        transformer: Any = QwenImageTransformer2DModel(**transformer_config)
        text_encoder = Qwen2_5_VLForConditionalGeneration._from_config(
            text_encoder_config(shrink), dtype=dtype
        )
        vae: Any = AutoencoderKLQwenImage(**{**VAE, **(SHRUNK["vae"] if shrink else {})})
    text_encoder.eval()
    if device != "meta":
        transformer.to(device=device, dtype=dtype)
        text_encoder.to(device=device, dtype=dtype)
        vae.to(device=device, dtype=dtype)
    pipeline_class = QwenImageEditPlusPipeline if variant == "plus" else QwenImageEditPipeline
    return pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor(tokenizer),
        transformer=transformer,
    )


def parameter_counts(pipe: Any) -> dict[str, int]:
    return {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("transformer", "text_encoder", "vae")
    }


# The Lightning LoRAs' layers in each transformer block (attention projections of both streams,
# both MLPs). Rank 64 over these gives 425 M parameters, 0.85 GB in bf16: the size of the
# published Lightning LoRA files, so an unfused adapter costs what the real one would.
LORA_TARGETS = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_out.0",
    "attn.to_add_out",
    "img_mlp.net.0.proj",
    "img_mlp.net.2",
    "txt_mlp.net.0.proj",
    "txt_mlp.net.2",
)
LORA_RANK = 64


def write_random_lora(transformer: Any, target: Path, rank: int = LORA_RANK, seed: int = 0) -> Path:
    """A random LoRA for `transformer` in the diffusers format, standing in for Lightning's.

    No LoRA can be downloaded on the GPU machine; random A and B matrices of the real LoRA's
    size cost the same FLOPs. B is small so the random model's activations stay finite.
    """
    from safetensors.torch import save_file

    generator = torch.Generator("cpu").manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for index, block in enumerate(transformer.transformer_blocks):
        for name in LORA_TARGETS:
            layer = block.get_submodule(name)
            prefix = f"transformer.transformer_blocks.{index}.{name}"
            shape_a, shape_b = (rank, layer.in_features), (layer.out_features, rank)
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(shape_a, generator=generator) * 0.01
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(shape_b, generator=generator) * 0.01
    target.mkdir(parents=True, exist_ok=True)
    save_file(
        {key: value.to(torch.bfloat16).contiguous() for key, value in tensors.items()},
        str(target / "pytorch_lora_weights.safetensors"),
    )
    return target
