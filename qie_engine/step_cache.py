"""The balanced preset's step caching: cache-dit's DBCache + TaylorSeer on the transformer.

cache-dit is attached to the transformer alone (its transformer-only interface), not to the
pipeline: on a pipeline it patches the pipeline *class*, which every instance in the process
shares. Its context is then refreshed before every request with that request's settings:
balanced gets the documented Qwen settings (presets.STEP_CACHE) for its step count; any other
preset gets a context that computes every step, which runs the same blocks in the same order
(the tests check the bytes match a model with no cache at all). The CFG bookkeeping follows the
request too: two transformer calls per step with true CFG, one without it or when batched.
"""

from __future__ import annotations

import logging
from typing import Any

from qie_engine.presets import STEP_CACHE, TAYLORSEER_ORDER

log = logging.getLogger(__name__)


class StepCache:
    """cache-dit on one transformer; `configure` before each pipeline call."""

    def __init__(self, transformer: Any, threshold: float | None = None) -> None:
        import cache_dit

        self.transformer = transformer
        self.threshold = float(
            threshold if threshold is not None else STEP_CACHE["residual_diff_threshold"]
        )
        config, calibrator = self._configs(on=False, steps=1, separate_cfg=False)
        cache_dit.enable_cache(transformer, cache_config=config, calibrator_config=calibrator)
        log.info(
            "step cache (cache-dit DBCache + TaylorSeer) on, residual threshold %s", self.threshold
        )

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

        config, calibrator = self._configs(on=on, steps=steps, separate_cfg=separate_cfg)
        cache_dit.refresh_context(
            self.transformer, cache_config=config, calibrator_config=calibrator
        )

    def cached_steps(self) -> int:
        """Transformer calls of the last run served from the cache (cond and uncond counted)."""
        import cache_dit

        stats = cache_dit.summary(self.transformer, logging=False)
        if not stats:
            return 0
        return len(stats[0].cached_steps) + len(stats[0].cfg_cached_steps)
