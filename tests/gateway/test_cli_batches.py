"""`qie batch` pieces that need no server: its arguments, its progress bar and its zip writing."""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import pytest

from qie_client import cli
from qie_client.client import BatchEvent
from qie_engine.contract import Preset


def test_the_cli_offers_every_preset_the_engine_has() -> None:
    assert set(cli.PRESETS) == {preset.value for preset in Preset}


@pytest.mark.parametrize(
    "where",
    [[], ["--out", "a", "--zip", "b.zip"]],
    ids=["neither", "both"],
)
def test_qie_batch_needs_one_of_out_and_zip(where: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        cli.build_parser().parse_args(["batch", "a.png", "b.png", "-p", "x", *where])
    assert refused.value.code == 2


def test_qie_batch_arguments_reach_the_options() -> None:
    args = cli.build_parser().parse_args(
        ["batch", "a.png", "-p", "x", "--variations", "3", "--seed", "0", "--output-format",
         "jpeg", "--preset", "balanced", "--zip", "out.zip"]
    )  # fmt: skip
    assert (args.images, args.prompt, args.variations, args.zip) == (["a.png"], "x", 3, "out.zip")
    assert cli._options(args) == {"preset": "balanced", "seed": 0, "output_format": "jpeg"}


def test_the_bar_counts_each_edit_once_and_a_running_one_by_its_steps() -> None:
    def job(event: str, index: int, **data: int) -> BatchEvent:
        return BatchEvent("0.0.0", event, {"job_id": f"j{index}", "index": index, **data})

    summary = {"completed": 1, "failed": 1, "cancelled": 0, "total": 3, "status": "processing"}
    with cli.BatchBar(3) as bar:
        bar.update(job("failed", 0))
        bar.update(job("progress", 1, step=1, total=4))
        bar.update(job("progress", 2, step=2, total=2))
        bar.update(job("completed", 2))
        bar.update(BatchEvent("0.0.0", "batch", {**summary, "batch_id": "b", "final": False}))
        assert bar.done == [1.0, 0.25, 1.0]
        assert bar.bar.n == pytest.approx(2.25)
        assert bar.bar.desc.startswith("processing (1/3 done, 1 failed)")


def test_zip_entries_are_written_inside_the_out_folder(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("a-edited.png", b"a")
        bundle.writestr("../../escaped.png", b"b")
    out = tmp_path / "deep" / "out"
    cli._save_batch(buffer.getvalue(), argparse.Namespace(zip=None, out=str(out)))
    assert sorted(p.name for p in out.iterdir()) == ["a-edited.png", "escaped.png"]
    assert not (tmp_path / "escaped.png").exists()
