"""dev_stack/base_images.py without an engine: which real images it stands in for, which mirror it
takes, and the dev model the Triton image builds being readable by the image's user."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dev_stack import base_images

ROOT = Path(__file__).resolve().parents[2]


def test_stand_ins_replace_exactly_the_images_the_dockerfiles_and_compose_name() -> None:
    real = {item.variable: item.real for item in base_images.stand_ins().values()}
    assert real["TRITON_BASE"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert real["PYTHON_BASE"] == "python:3.12.12-slim-bookworm"
    assert real["REDIS_IMAGE"] == "redis:7.4.2-alpine"
    assert real["PROMETHEUS_IMAGE"] == "prom/prometheus:v2.55.1"


def test_the_triton_stand_in_carries_the_triton_release_dockerfile_triton_pins() -> None:
    triton = base_images.stand_ins()["tritonserver"]
    assert triton.tag == f"pytriton-{base_images.pytriton_version()}"
    assert base_images.pytriton_version() == "0.7.0"  # Triton 2.51, as in the 24.10 image
    assert triton.parent == "python" and triton.parent_arg == "PYTHON_BASE"


def test_every_stand_in_recipe_exists_and_takes_its_parent_as_an_argument() -> None:
    for item in base_images.stand_ins().values():
        if item.parent is None:
            continue
        text = item.dockerfile.read_text()
        assert f"ARG {item.parent_arg}\nFROM ${{{item.parent_arg}}}" in text
        for name in item.extra_files:
            assert (base_images.RECIPES / name).is_file()


def test_the_mirror_comes_from_the_hosts_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security/\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list").write_text("deb https://other.example/apt cloud main\n")
    assert base_images.host_mirrors(tmp_path) == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )


def test_one_line_sources_work_too_and_a_host_without_debian_gets_deb_debian_org(
    tmp_path: Path,
) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://m.example/debian bookworm main\n"
    )
    archive, security = base_images.host_mirrors(tmp_path)
    assert archive == "http://m.example/debian"
    assert security == base_images.DEFAULT_SECURITY_MIRROR
    (tmp_path / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu jammy main\n")
    assert base_images.host_mirrors(tmp_path) == (
        base_images.DEFAULT_MIRROR,
        base_images.DEFAULT_SECURITY_MIRROR,
    )


def test_the_env_file_holds_one_assignment_per_variable_and_keeps_empty_values() -> None:
    lines = base_images.env_lines({"TRITON_BASE": "a/b:c", "TORCH_INDEX_URL": ""})
    assert lines == "TRITON_BASE=a/b:c\nTORCH_INDEX_URL=\n"


@pytest.mark.timeout(300)
def test_the_dev_model_is_readable_by_a_user_other_than_its_builder(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "scripts/build_dev_model.py", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=240,
    )
    paths = list(tmp_path.rglob("*"))
    weights = [p for p in paths if p.suffix == ".safetensors"]
    assert len(weights) >= 6  # text encoder, transformer and VAE of both variants
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), f"{path}: {oct(mode)}"
