"""The stand-in bases: made from Debian's packages when no registry answers, and made only once."""

from __future__ import annotations

import pytest

from dev_stack import base_images
from dev_stack.compose import docker

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]
NAMES = ["python", "tritonserver", "redis", "prometheus"]


def test_stand_in_bases_are_built_once_and_then_left_alone(
    engine: None, capsys: pytest.CaptureFixture[str]
) -> None:
    first = base_images.resolve(NAMES, prefer_real=False)
    ids = {image: base_images.image_id(image) for image in first.values() if image}
    capsys.readouterr()

    again = base_images.resolve(NAMES, prefer_real=False)

    assert again == first
    assert {image: base_images.image_id(image) for image in ids} == ids
    said = capsys.readouterr().out
    assert "building" not in said
    assert said.count("is present") == len(base_images.stand_ins())


def test_the_debian_base_trusts_the_hosts_certificate_authorities(engine: None) -> None:
    image = base_images.stand_ins()["debian"].image
    base_images.resolve(["python"], prefer_real=False)
    bundle = docker("run", "--rm", image, "cat", "/etc/ssl/certs/ca-certificates.crt")
    assert bundle == base_images.HOST_CA_BUNDLE.read_text()


def test_the_triton_stand_in_has_the_layout_dockerfile_triton_builds_on(engine: None) -> None:
    image = base_images.resolve(["tritonserver"], prefer_real=False)["TRITON_BASE"]
    listing = docker(
        "run", "--rm", image, "ls",
        "/opt/tritonserver/bin/tritonserver",
        "/opt/tritonserver/backends/python/libtriton_python.so",
        "/opt/tritonserver/backends/python/triton_python_backend_utils.py",
        "/opt/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub",
    )  # fmt: skip
    assert len(listing.split()) == 4
