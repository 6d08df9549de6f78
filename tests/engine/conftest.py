"""Engine fixtures: the tiny dev models on disk, and editors loaded from them once a session."""

from __future__ import annotations

from pathlib import Path

import pytest

from qie_engine.qwen_editor import QwenEditor
from tests.engine.tiny_editors import dev_editor, dev_model


@pytest.fixture(scope="session")
def tiny_edit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dev_model("tiny-qwen-image-edit", "edit", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_plus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dev_model("tiny-qwen-image-edit-plus", "plus", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def edit_editor(tiny_edit_dir: Path) -> QwenEditor:
    """The tiny Edit model with every preset; tests must leave it as they found it."""
    return dev_editor(tiny_edit_dir)


@pytest.fixture(scope="session")
def plus_editor(tiny_plus_dir: Path) -> QwenEditor:
    return dev_editor(tiny_plus_dir, "qwen_image_edit_plus")
