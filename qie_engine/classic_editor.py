"""The classic editor: no neural network, a fixed instruction vocabulary, deterministic pixels."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from qie_engine.classic_instructions import VOCABULARY, parse_instruction
from qie_engine.classic_ops import ClassicLimits, Operation, apply_operation
from qie_engine.contract import ProgressEvent, ResultMeta
from qie_engine.edit_request import EditRequest, RequestLimits
from qie_engine.editor import CancelledFn, EditOutcome, ProgressFn
from qie_engine.errors import Cancelled


class ClassicEditor:
    """Parses the prompt into operations and applies them in order; steps, seed, CFG are ignored."""

    def __init__(self, name: str = "classic_edit", limits: RequestLimits | None = None) -> None:
        self.name = name
        # Every operation works on exactly one image, whatever limits the caller passes.
        self.limits = dataclasses.replace(limits or RequestLimits(), max_images=1)
        # No instruction may grow an image beyond what could have been uploaded.
        self.operation_limits = ClassicLimits(max_result_pixels=self.limits.image.max_pixels)

    def edit(
        self, request: EditRequest, on_progress: ProgressFn, is_cancelled: CancelledFn
    ) -> EditOutcome:
        """Apply the parsed operations in order, reporting progress after each one."""
        operations = parse_instruction(request.prompt, self.operation_limits)
        options = request.options
        if options.width is not None or options.height is not None:
            operations.append(_final_resize(options.width, options.height))
        total = len(operations)
        image = request.images[0]
        started = time.perf_counter()
        for step, op in enumerate(operations, start=1):
            if is_cancelled():
                raise Cancelled("the request was cancelled")
            image = apply_operation(image, op, self.operation_limits)
            on_progress(
                ProgressEvent(
                    step=step,
                    total=total,
                    elapsed_s=round(time.perf_counter() - started, 4),
                    message=op.label,
                )
            )
        meta = ResultMeta(
            model=self.name,
            seed=None,
            steps=total,
            width=image.width,
            height=image.height,
            format=options.output_format,
            random_weights=False,
            operations=[op.label for op in operations],
        )
        return EditOutcome(image=image, meta=meta)

    def working_size(self, crop: tuple[int, int]) -> tuple[int, int]:
        """A local edit's crop is edited as it is: no network, no working size to fit."""
        return crop

    def describe(self) -> dict[str, Any]:
        """Static facts for clients, including the instruction vocabulary."""
        return {
            "variant": "classic",
            "random_weights": False,
            "max_images": 1,
            "vocabulary": list(VOCABULARY),
            "defaults": {},
        }


def _final_resize(width: int | None, height: int | None) -> Operation:
    # The width/height options mean an exact output size here, unlike the diffusion models'
    # multiple-of-16 rounding; with only one given, the other follows the aspect ratio.
    if width is not None and height is not None:
        label = f"resize to {width}x{height}"
    elif width is not None:
        label = f"resize to width {width}"
    else:
        label = f"resize to height {height}"
    return Operation(
        name="resize", params={"width": width or 0, "height": height or 0}, label=label
    )
