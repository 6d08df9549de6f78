"""Batched CFG: the cond and uncond transformer calls of a step as one batch-2 call.

diffusers' Qwen edit pipelines call the transformer twice per step with true CFG: once with the
prompt's embeddings, then with the negative prompt's, on the same latents. For one request,
`batched_cfg(pipe)` records the two embeddings as the pipeline encodes them, and a diffusers
ModelHook on the transformer turns the cond call into one batch-2 call (the shorter text padded,
masked out through encoder_hidden_states_mask, which the attention honours) and answers the
uncond call from it. Anything it does not recognise runs unchanged. Text RoPE positions start
after the image's, so padding the text at its end moves no other token.

That mask is why some attention backends cannot batch: diffusers refuses any mask for
flash-attn and sageattention (and PyTorch's own flash kernel), so `check_masked_attention`
refuses such a backend at load instead of failing the warm-up or the first request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch.nn import functional

from qie_engine.errors import EngineError

HOOK_NAME = "qie_batched_cfg"


def _padded(embeds: torch.Tensor, mask: torch.Tensor | None, length: int) -> tuple[Any, Any]:
    if mask is None:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    extra = length - embeds.shape[1]
    return functional.pad(embeds, (0, 0, 0, extra)), functional.pad(mask, (0, extra))


def joined_text(
    cond: tuple[torch.Tensor, torch.Tensor | None],
    uncond: tuple[torch.Tensor, torch.Tensor | None],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Both prompts' embeddings in one batch, padded to the longer; no mask when none is needed."""
    length = max(cond[0].shape[1], uncond[0].shape[1])
    cond_embeds, cond_mask = _padded(*cond, length)
    uncond_embeds, uncond_mask = _padded(*uncond, length)
    mask = torch.cat([cond_mask, uncond_mask])
    return torch.cat([cond_embeds, uncond_embeds]), None if bool(mask.all()) else mask


def check_masked_attention(backend: str | None, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse at load an attention backend that cannot take the mask batched CFG needs.

    diffusers itself is asked: one attention over two tokens, the second masked out, on the
    instance's device, through the dispatcher the transformer calls (None: its default).
    """
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    tokens = torch.zeros(1, 2, 1, 64, device=device, dtype=dtype)  # batch, tokens, heads, dim
    mask = torch.tensor([[True, False]], device=device)[:, None, None, :]
    name = AttentionBackendName(backend) if backend else None  # set_attention_backend checked it
    try:
        dispatch_attention_fn(tokens, tokens, tokens, attn_mask=mask, backend=name)
    except Exception as exc:  # each backend refuses in its own words; they are quoted
        raise EngineError(
            "BATCHED_CFG=true masks out the padding of the shorter prompt, and "
            f"ATTENTION_BACKEND={backend or '(default)'} cannot take that mask "
            f"({type(exc).__name__}: {exc}). Leave ATTENTION_BACKEND empty (PyTorch SDPA), "
            "use one that takes a mask (native, _native_math, flex), or set BATCHED_CFG=false"
        ) from None


class CfgBatcher(ModelHook):
    """Serves the uncond call of each step from the cond call's batch-2 result."""

    def __init__(self, encoded: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        super().__init__()
        self.encoded = encoded  # filled by the pipeline's encode_prompt calls: cond, then uncond
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None  # (latents in, uncond out)
        self.batched_calls = 0

    def _pair(self, text: Any) -> bool:
        return len(self.encoded) == 2 and text is self.encoded[0][0]

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        forward: Any = self.fn_ref.original_forward
        text = kwargs.get("encoder_hidden_states")
        if self.pending is not None and len(self.encoded) == 2 and text is self.encoded[1][0]:
            latents, uncond = self.pending
            self.pending = None
            if kwargs.get("hidden_states") is latents:
                return (uncond,)
        if args or kwargs.get("return_dict", True) or not self._pair(text):
            return forward(*args, **kwargs)
        return (self._batched(forward, kwargs),)

    def _batched(self, forward: Any, kwargs: dict[str, Any]) -> torch.Tensor:
        latents = kwargs["hidden_states"]
        batch = latents.shape[0]
        text, mask = joined_text(
            (kwargs["encoder_hidden_states"], kwargs.get("encoder_hidden_states_mask")),
            self.encoded[1],
        )
        joined = {
            **kwargs,
            "hidden_states": torch.cat([latents, latents]),
            "timestep": torch.cat([kwargs["timestep"], kwargs["timestep"]]),
            "encoder_hidden_states": text,
            "encoder_hidden_states_mask": mask,
            "img_shapes": list(kwargs["img_shapes"]) * 2,
        }
        if kwargs.get("guidance") is not None:
            joined["guidance"] = torch.cat([kwargs["guidance"], kwargs["guidance"]])
        output = forward(**joined)[0]
        self.batched_calls += 1
        self.pending = (latents, output[batch:])
        return output[:batch]


@contextmanager
def batched_cfg(pipe: Any) -> Iterator[CfgBatcher]:
    """For one pipeline call: record the prompt encodings and batch the transformer's CFG pair."""
    encoded: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    encode = pipe.encode_prompt

    def recording_encode(*args: Any, **kwargs: Any) -> Any:
        result = encode(*args, **kwargs)
        encoded.append(result)
        return result

    batcher = CfgBatcher(encoded)
    registry = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
    pipe.encode_prompt = recording_encode  # an instance attribute, shadowing the method
    registry.register_hook(batcher, HOOK_NAME)
    try:
        yield batcher
    finally:
        registry.remove_hook(HOOK_NAME, recurse=False)
        del pipe.encode_prompt
