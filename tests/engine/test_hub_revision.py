"""MODEL_REVISION and LORA_REVISION: weights read by hub id at a pinned commit, offline.

A Hugging Face cache is laid out here as the hub client writes it (models--owner--name with
snapshots/<commit> and refs/main), holding the dev models; the hub is unreachable: offline
mode is on, as HF_HUB_OFFLINE=1 sets it, and any socket connect fails the test.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

from qie_engine.errors import EngineError
from qie_engine.model_config import qwen_settings
from tests.engine.tiny_editors import dev_editor

REVIEWED = "1" * 40  # the commit an operator pinned
UPSTREAM = "2" * 40  # a later commit that main points to now
LORA_COMMIT = "3" * 40


def cache_snapshot(hub: Path, repo: str, commit: str, source: Path, *, main: bool) -> Path:
    """Put `source` in the cache as `repo` at `commit`; `main` makes it what main points to."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    shutil.copytree(source, snapshot)
    if main:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def offline_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_edit_dir: Path, tiny_plus_dir: Path
) -> Path:
    hub = tmp_path / "hub"
    # The reviewed commit holds the Edit model; main has moved on to a Plus one since.
    cache_snapshot(hub, "qie/tiny-edit", REVIEWED, tiny_edit_dir, main=False)
    cache_snapshot(hub, "qie/tiny-edit", UPSTREAM, tiny_plus_dir, main=True)
    # The LoRA repo has no main in the cache at all: only its pinned commit can load.
    cache_snapshot(hub, "qie/tiny-lora", LORA_COMMIT, tiny_edit_dir / "lightning_lora", main=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_network(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the load reached for the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return hub


def test_a_pinned_model_and_lora_load_by_id_from_the_cache_with_no_network(
    offline_hub: Path,
) -> None:
    editor = dev_editor(
        Path("qie/tiny-edit"),
        model_revision=REVIEWED,
        lora_path="qie/tiny-lora/pytorch_lora_weights.safetensors",
        lora_revision=LORA_COMMIT,
    )
    assert editor.variant == "edit"  # the reviewed weights, not main's
    facts = editor.describe()
    assert facts["model_id"] == "qie/tiny-edit"
    assert (facts["model_revision"], facts["model_commit"]) == (REVIEWED, REVIEWED)
    assert facts["lora_revision"] == LORA_COMMIT
    assert editor.lightning is not None
    assert editor.lightning.source.location == "qie/tiny-lora"


def test_an_unpinned_model_is_whatever_main_points_to_and_says_which_commit(
    offline_hub: Path, caplog: pytest.LogCaptureFixture
) -> None:
    editor = dev_editor(Path("qie/tiny-edit"))
    assert editor.variant == "plus"
    assert editor.describe()["model_commit"] == UPSTREAM
    assert editor.describe()["model_revision"] is None
    assert f"set MODEL_REVISION={UPSTREAM}" in caplog.text


def test_a_commit_the_cache_does_not_hold_fails_at_load_naming_it(offline_hub: Path) -> None:
    with pytest.raises(EngineError, match=f"at revision {'4' * 40}.*HF_HUB_OFFLINE"):
        dev_editor(Path("qie/tiny-edit"), model_revision="4" * 40)


def test_a_revision_for_a_local_folder_or_lora_is_refused(tiny_edit_dir: Path) -> None:
    with pytest.raises(EngineError, match=r"MODEL_REVISION=abc .* local folder"):
        dev_editor(tiny_edit_dir, model_revision="abc")
    with pytest.raises(EngineError, match=r"LORA_REVISION=abc .* local"):
        dev_editor(tiny_edit_dir, lora_revision="abc")


def test_the_revisions_are_parameters() -> None:
    settings = qwen_settings(
        {"MODEL_ID": "Qwen/Qwen-Image-Edit-2511", "MODEL_REVISION": " abc ", "LORA_REVISION": ""}
    )
    assert (settings.model_revision, settings.lora_revision) == ("abc", None)
