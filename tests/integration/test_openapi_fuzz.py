"""The OpenAPI fuzzer (schemathesis) against a real gateway and a real Triton: every operation
but the endless event stream, all checks, every phase including the stateful one that follows
the links from an accepted job. Zero failures.

Configuration: tests/schemathesis.toml; generators the schema cannot express (real images, the
classic vocabulary): tests/schemathesis_hooks.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev_stack.processes import ROOT
from dev_stack.triton import TritonServer
from tests.gateway_server import KEY_A, GatewayServer, running_gateway

pytestmark = pytest.mark.integration
CONFIG = ROOT / "tests" / "schemathesis.toml"


@pytest.fixture(scope="module")
def fuzzed(triton_server: TritonServer) -> Iterator[GatewayServer]:
    """classic_edit by default (edits take milliseconds), and no rate or queue limit in the way
    (each is tested on its own: the fuzzer sends hundreds of batches)."""
    with running_gateway(
        [triton_server.grpc_url],
        "classic_edit",
        DEFAULT_MODEL="classic_edit",
        RATE_LIMIT="1000000/minute",
        MAX_QUEUE_DEPTH="100000",
    ) as server:
        yield server


# Three seeds: ours since the start, and two more, so that a finding is not one seed's luck.
SEEDS = (20261201, 1, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_fuzzer_finds_nothing(fuzzed: GatewayServer, tmp_path: Path, seed: int) -> None:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st), "--config-file", str(CONFIG), "run", f"{fuzzed.url}/openapi.json",
        "--seed", str(seed),
        "--header", f"Authorization: Bearer {KEY_A}",
        "--report", "junit", "--report-dir", str(tmp_path), "--no-color",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-15000:]
    # Every case passed (a warning, such as random ids that name no job, is not a finding).
    cases = re.search(r"(\d+) generated, (\d+) passed(, \d+ skipped)?\n", output)
    assert cases is not None and cases[1] == cases[2], output[-15000:]
    # The stateful phase ran over the six links the document states (three from an accepted
    # job, three from an accepted batch). A link counts as covered once its target answered
    # with success; a result asked for before its edit ended is a 409, so not every one is.
    links = re.search(r"API Links: +(\d+) covered / (\d+) selected", output)
    assert links is not None, output[-15000:]
    assert int(links[2]) == 6 and int(links[1]) >= 3, links[0]
