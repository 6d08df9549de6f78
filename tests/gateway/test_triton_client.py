"""How Triton's answers are classified for the job service: a kind, one of our codes, and no
internal address in what a client sees."""

from __future__ import annotations

import grpc
import pytest

from gateway.triton.client import classify_error


@pytest.mark.parametrize(
    ("message", "status", "kind", "code"),
    [
        ("[image_too_large] the image is 9x9", None, "input", "image_too_large"),
        ("[cancelled] cancelled after step 3 of 50", None, "cancelled", "cancelled"),
        ("[internal] the edit failed (RuntimeError)", None, "internal", "model_error"),
        (
            "failed to connect to all addresses",
            grpc.StatusCode.UNAVAILABLE,
            "unavailable",
            "triton_unavailable",
        ),
        ("Deadline Exceeded", grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", "deadline_exceeded"),
        ("Exceeds maximum queue size", None, "queue_full", "queue_full"),
        (
            "Request for unknown model: 'x' is not found",
            None,
            "model_unavailable",
            "model_unavailable",
        ),
        ("Stub process 'q_0_0' is not healthy.", None, "internal", "model_crashed"),
        ("something odd at 10.0.0.5:8001", None, "internal", "triton_error"),
    ],
)
def test_triton_errors_are_classified(
    message: str, status: grpc.StatusCode | None, kind: str, code: str
) -> None:
    error = classify_error(message, status)
    assert (error.kind, error.code) == (kind, code)
    assert "10.0.0.5" not in error.message  # internal hosts never reach a client
