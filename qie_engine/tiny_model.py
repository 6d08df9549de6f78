"""Build a tiny random-weight Qwen-Image-Edit pipeline offline, in the real diffusers format.

Its pixels are meaningless: it exists so the real loading and denoising code runs on a CPU
machine with no download. Plus variants (2509/2511) share every component; only the pipeline
class in model_index.json differs.

Beside the weights it writes its stand-ins (model_folder.DevStandIns, in model_index.json): a
tiny random LoRA in the Lightning LoRA's place, the step-cache threshold that random weights
need, and a cap on the condition-image area. Every preset then runs the production code path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from qie_engine.model_folder import DEV_STAND_INS_KEY, RANDOM_WEIGHTS_KEY, DevStandIns

SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|endoftext|>",
]
# The tiny model's stand-ins. 256 x 256 condition images instead of ~1 MP keep a step at a
# fraction of a second; 0.6 sits above the 0.24-0.52 residual diffs that random weights give,
# so balanced really serves steps from its cache (the real model keeps cache-dit's 0.12).
LORA_FOLDER = "lightning_lora"
STAND_INS = DevStandIns(condition_pixels=65536, cache_threshold=0.6, lightning_lora=LORA_FOLDER)
LORA_TARGETS = ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"]


def _byte_level_vocab() -> dict[str, int]:
    from tokenizers import pre_tokenizers

    return {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}


def _text_encoder(tokenizer: Any) -> Any:
    """A two-layer Qwen2.5-VL whose special token ids are the tokenizer's."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids: dict[str, Any] = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "rope_theta": 1000000.0,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "fullatt_block_indexes": [1],
            "window_size": 112,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _denoiser() -> tuple[Any, Any, Any]:
    """The transformer, the VAE and the scheduler, tiny (the scheduler as Qwen ships it)."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageTransformer2DModel,
    )

    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        num_train_timesteps=1000,
        shift=1.0,
        shift_terminal=0.02,
        time_shift_type="exponential",
        use_dynamic_shifting=True,
    )
    return transformer, vae, scheduler


def build_tiny_pipeline(variant: str = "edit", seed: int = 0) -> Any:
    """Return an in-memory tiny pipeline; variant is "edit" or "plus"."""
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = Qwen2Tokenizer(vocab=_byte_level_vocab(), merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    text_encoder = _text_encoder(tokenizer)
    # Few pixels per condition image keeps the vision tower cheap; the real processor allows ~1 MP.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )
    transformer, vae, scheduler = _denoiser()
    pipeline_class = QwenImageEditPlusPipeline if variant == "plus" else QwenImageEditPipeline
    return pipeline_class(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer,
    )


def save_tiny_lora(pipe: Any, target: Path, seed: int = 0) -> Path:
    """A random LoRA for the tiny transformer, in the diffusers LoRA format (like Lightning's).

    It is added to `pipe.transformer` in memory only, after the base weights were saved.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed + 1)
    # init_lora_weights=False: random A and B, so the LoRA really changes the output.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    pipe.transformer.add_adapter(config)
    type(pipe).save_lora_weights(
        target, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer)
    )
    return target


def save_tiny_pipeline(target: Path, variant: str = "edit", seed: int = 0) -> Path:
    """Write the tiny pipeline with save_pretrained, its stand-ins, and the random-weights mark."""
    pipe = build_tiny_pipeline(variant=variant, seed=seed)
    target.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(target)
    save_tiny_lora(pipe, target / LORA_FOLDER, seed=seed)
    index_path = target / "model_index.json"
    index = json.loads(index_path.read_text())
    index[RANDOM_WEIGHTS_KEY] = True
    index[DEV_STAND_INS_KEY] = STAND_INS.to_json()
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return target
