"""What the gateway knows of Triton's models, refreshed in the background; /health and /models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gateway.metrics import Metrics
from gateway.triton.client import TritonCallError, TritonPool
from qie_engine.image_codec import ALLOWED_FORMATS, MIME_TYPES

log = logging.getLogger(__name__)


class Health(str, Enum):
    STARTING = "STARTING"
    READY = "READY"
    BUSY = "BUSY"
    UNHEALTHY = "UNHEALTHY"


@dataclass
class ModelInfo:
    name: str
    ready: bool = False
    facts: dict[str, Any] = field(default_factory=dict)  # from the model's DESCRIBE answer
    parameters: dict[str, str] = field(default_factory=dict)  # from config.pbtxt
    instances: int = 1

    @property
    def max_images(self) -> int:
        return int(self.facts.get("max_images", 1))

    @property
    def seeded(self) -> bool:
        """It samples from a seed (it has presets: a diffusion model); classic_edit does not."""
        return bool(self.facts.get("presets"))

    def public(self, limits: dict[str, int]) -> dict[str, Any]:
        # `served` is the instance's running tally when it was asked: no fact of the model.
        facts = {k: v for k, v in self.facts.items() if k not in ("type", "model", "served")}
        return {
            "name": self.name,
            "ready": self.ready,
            "variant": facts.pop("variant", None),
            "random_weights": facts.pop("random_weights", None),
            "max_images": self.max_images,
            "instances": self.instances,
            "limits": limits,
            "formats": [MIME_TYPES[f] for f in ALLOWED_FORMATS],
            **facts,
        }


def _instance_count(config: dict[str, Any]) -> int:
    """Instances Triton runs: a KIND_GPU group places `count` on each GPU it lists."""
    groups = config.get("instance_group") or [{"count": 1}]
    return max(1, sum(int(g.get("count", 1)) * max(1, len(g.get("gpus") or [])) for g in groups))


class ModelRegistry:
    def __init__(
        self,
        pool: TritonPool,
        metrics: Metrics,
        default_model: str,
        concurrency_override: int | None,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.default_model = default_model
        self.concurrency_override = concurrency_override
        self.models: dict[str, ModelInfo] = {}
        self.ever_ready = False
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        # Told the name of each model the first time it is ready (its runner starts then).
        self.on_ready: Callable[[str], None] = lambda _name: None

    def inflight_limit(self, model: str) -> int:
        """As many edits in flight as the model's instances take, on every Triton."""
        if self.concurrency_override:
            return self.concurrency_override
        info = self.models.get(model)
        instances = info.instances if info is not None else 1
        return instances * max(1, len(self.pool.endpoints))

    def triton_status(self) -> dict[str, bool]:
        return {e.url: e.up for e in self.pool.endpoints}

    async def refresh(self) -> None:
        await self.pool.refresh()
        ready = set().union(*(e.ready_models for e in self.pool.endpoints))
        known = set().union(*(e.known_models for e in self.pool.endpoints))
        for endpoint in self.pool.endpoints:
            self.metrics.triton_up.labels(url=endpoint.url).set(1 if endpoint.up else 0)
        # A model still loading (or failed) is known but not ready: 503, not 404.
        for name in known - set(self.models):
            self.models[name] = ModelInfo(name=name)
        for name, info in self.models.items():
            was_ready = info.ready
            info.ready = name in ready
            self.metrics.model_ready.labels(model=name).set(1 if info.ready else 0)
            if info.ready and (not was_ready or not info.facts):
                await self._learn(info)
        if self.models.get(self.default_model, ModelInfo("")).ready or any(
            m.ready for m in self.models.values()
        ):
            self.ever_ready = True

    async def _learn(self, info: ModelInfo) -> None:
        try:
            config = await self.pool.model_config(info.name)
            info.facts = await self.pool.describe(info.name)
        except TritonCallError as exc:
            log.warning("could not read %s's facts: %s", info.name, exc.message)
            info.ready = False
            return
        info.parameters = {
            k: str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()
        }
        info.instances = _instance_count(config)
        self.on_ready(info.name)
        log.info(
            "model %s ready (%s%s), %d instance(s)",
            info.name,
            info.facts.get("variant", "?"),
            ", random weights: pixels are meaningless" if info.facts.get("random_weights") else "",
            info.instances,
        )

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the poller must never die
                log.exception("refreshing Triton state failed")
            self._changed.set()
            await asyncio.sleep(interval_s)

    def start(self, interval_s: float) -> None:
        self._task = asyncio.create_task(self.run(interval_s), name="triton-poller")

    async def wait_first_refresh(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    def health(self, default_model_saturated: bool) -> Health:
        any_up = any(e.up for e in self.pool.endpoints)
        ready = [m for m in self.models.values() if m.ready]
        if not any_up or not ready:
            return Health.UNHEALTHY if self.ever_ready else Health.STARTING
        return Health.BUSY if default_model_saturated else Health.READY
