"""The balanced preset's step caching: cache-dit's DBCache + TaylorSeer on the transformer.

cache-dit is attached to the transformer alone (its transformer-only interface), not to the
pipeline: on a pipeline it patches the pipeline *class*, which every instance in the process
shares. Its context is then refreshed before every request with that request's settings:
balanced gets the documented Qwen settings (presets.STEP_CACHE) for its step count; any other
preset gets a context that computes every step, which runs the same blocks in the same order
(the tests check the bytes match a model with no cache at all). The CFG bookkeeping follows the
request too: two transformer calls per step with true CFG, one without it or when batched.

With CPU_OFFLOAD=model, diffusers removes and re-adds accelerate's hooks at the end of every
call, and accelerate's removal puts back the `forward` the module had before its hook. So the
loader attaches the cache before placing the pipeline: the forward accelerate keeps and restores
is cache-dit's. `configure` still checks, and attaches it again if anything else took it off.
"""

from __future__ import annotations

import logging
from typing import Any

from qie_engine.presets import STEP_CACHE, TAYLORSEER_ORDER

log = logging.getLogger(__name__)


class StepCache:
    """cache-dit on one transformer; `configure` before each pipeline call."""

    def __init__(self, transformer: Any, threshold: float | None = None) -> None:
        self.transformer = transformer
        self.threshold = float(
            threshold if threshold is not None else STEP_CACHE["residual_diff_threshold"]
        )
        self.cached_forward: Any = None
        self._attach()
        log.info(
            "step cache (cache-dit DBCache + TaylorSeer) on, residual threshold %s", self.threshold
        )

    def _attach(self) -> None:
        import cache_dit

        config, calibrator = self._configs(on=False, steps=1, separate_cfg=False)
        cache_dit.enable_cache(self.transformer, cache_config=config, calibrator_config=calibrator)
        self.cached_forward = self.transformer.forward

    def attached(self) -> bool:
        """Whether a call still runs cache-dit's forward: as the forward itself, or as the one
        an accelerate hook wraps (`_old_forward`, which the hook's removal restores)."""
        forwards = (self.transformer.forward, getattr(self.transformer, "_old_forward", None))
        return any(forward is self.cached_forward for forward in forwards)

    def _configs(self, *, on: bool, steps: int, separate_cfg: bool) -> tuple[Any, Any]:
        from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

        if not on:
            # Every step inside the warm-up window: nothing is ever served from the cache.
            config = DBCacheConfig(
                **{**STEP_CACHE, "max_warmup_steps": steps, "warmup_interval": 1},
                num_inference_steps=steps,
                enable_separate_cfg=separate_cfg,
            )
            off = TaylorSeerCalibratorConfig(
                enable_calibrator=False, enable_encoder_calibrator=False
            )
            return config, off
        config = DBCacheConfig(
            **{**STEP_CACHE, "residual_diff_threshold": self.threshold},
            num_inference_steps=steps,
            enable_separate_cfg=separate_cfg,
        )
        return config, TaylorSeerCalibratorConfig(taylorseer_order=TAYLORSEER_ORDER)

    def configure(self, *, on: bool, steps: int, separate_cfg: bool) -> None:
        """A fresh context for the next pipeline call (a cancelled run leaves none behind)."""
        import cache_dit

        if not self.attached():
            log.warning("the transformer's forward is no longer cache-dit's: attaching it again")
            cache_dit.disable_cache(self.transformer)
            self._attach()
        config, calibrator = self._configs(on=on, steps=steps, separate_cfg=separate_cfg)
        cache_dit.refresh_context(
            self.transformer, cache_config=config, calibrator_config=calibrator
        )

    def cached_steps(self) -> int:
        """Transformer calls of the last run served from the cache (cond and uncond counted).

        Read from the run's own contexts, which `configure` made fresh: cache-dit's summary
        copies its figures onto the modules only at a run's last step, so a run that never went
        through the cache would report the one before it. The context manager and its context
        names are the transformer attributes cache-dit's own refresh_context reads.
        """
        manager = self.transformer._context_manager
        contexts = [manager.get_context(name) for name in self.transformer._context_names]
        return sum(
            len(context.get_cached_steps()) + len(context.get_cfg_cached_steps())
            for context in contexts
        )
