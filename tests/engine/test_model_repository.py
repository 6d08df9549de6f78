"""The Triton model repository: one tensor contract, decoupled models, thin model.py adapters."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from qie_engine import contract
from qie_engine.contract import Preset
from qie_engine.model_config import OVERRIDABLE, qwen_settings, read_parameters, request_limits

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
MODELS = sorted(path.parent.name for path in REPOSITORY.glob("*/config.pbtxt"))
CONFIGS = sorted(REPOSITORY.glob("*/config.pbtxt")) + sorted(REPOSITORY.glob("*/configs/*.pbtxt"))

STRING, BOOL = pb.DataType.TYPE_STRING, pb.DataType.TYPE_BOOL
# (name, data type, dims, optional), in the order of docs/tensor-contract.md.
CONTRACT_INPUTS = [
    (contract.INPUT_IMAGES, STRING, [-1], True),
    (contract.INPUT_PROMPT, STRING, [1], True),
    (contract.INPUT_NEGATIVE_PROMPT, STRING, [1], True),
    (contract.INPUT_OPTIONS, STRING, [1], True),
    (contract.INPUT_DESCRIBE, BOOL, [1], True),
]
CONTRACT_OUTPUTS = [(contract.OUTPUT_EVENT, STRING, [1]), (contract.OUTPUT_IMAGE, STRING, [1])]


def load(path: Path) -> pb.ModelConfig:
    """Parse with Triton's own ModelConfig schema: an unknown field or a typo fails here."""
    return text_format.Parse(path.read_text(), pb.ModelConfig())


def config_id(path: Path) -> str:
    return str(path.relative_to(REPOSITORY))


def test_repository_holds_the_two_models() -> None:
    assert MODELS == ["classic_edit", "qwen_image_edit"]


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_config_is_a_python_model_named_after_its_folder(path: Path) -> None:
    config = load(path)
    folder = path.parent if path.parent.name != "configs" else path.parent.parent
    assert config.name == folder.name
    assert config.backend == "python"
    assert config.max_batch_size == 0
    assert (folder / "1" / "model.py").is_file()


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_every_model_declares_the_one_tensor_contract(path: Path) -> None:
    config = load(path)
    inputs = [(t.name, t.data_type, list(t.dims), t.optional) for t in config.input]
    outputs = [(t.name, t.data_type, list(t.dims)) for t in config.output]
    assert inputs == CONTRACT_INPUTS
    assert outputs == CONTRACT_OUTPUTS


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_every_model_is_decoupled(path: Path) -> None:
    assert load(path).model_transaction_policy.decoupled is True


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_every_parameter_can_be_overridden_from_the_environment(path: Path) -> None:
    keys = set(load(path).parameters)
    assert keys
    assert keys <= set(OVERRIDABLE)


def test_qwen_cpu_config_differs_only_in_instance_group() -> None:
    gpu = load(REPOSITORY / "qwen_image_edit" / "config.pbtxt")
    cpu = load(REPOSITORY / "qwen_image_edit" / "configs" / "cpu.pbtxt")
    assert [group.kind for group in gpu.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    assert [group.kind for group in cpu.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    gpu.ClearField("instance_group")
    cpu.ClearField("instance_group")
    assert gpu == cpu


def test_classic_model_runs_on_the_cpu() -> None:
    config = load(REPOSITORY / "classic_edit" / "config.pbtxt")
    assert {group.kind for group in config.instance_group} == {pb.ModelInstanceGroup.KIND_CPU}


def triton_json(path: Path) -> str:
    """The config as Triton passes it to initialize() in args["model_config"]."""
    return json.dumps(json_format.MessageToDict(load(path), preserving_proto_field_name=True))


@pytest.mark.parametrize("name", ["config.pbtxt", "configs/cpu.pbtxt"])
def test_qwen_default_parameters_make_valid_settings(name: str) -> None:
    settings = qwen_settings(
        read_parameters(triton_json(REPOSITORY / "qwen_image_edit" / name), {})
    )
    assert settings.model_id == "Qwen/Qwen-Image-Edit-2511"
    assert settings.device == "auto"
    assert settings.quantization == "none"
    assert settings.presets == (Preset.QUALITY, Preset.BALANCED, Preset.FAST)
    assert settings.default_preset is Preset.FAST
    assert settings.warmup is True
    assert settings.limits.image.max_pixels == 4096 * 4096


def test_classic_default_parameters_make_valid_limits() -> None:
    params = read_parameters(triton_json(REPOSITORY / "classic_edit" / "config.pbtxt"), {})
    limits = request_limits(params)
    assert limits.image.max_bytes == 20 * 1024 * 1024
    assert limits.max_prompt_chars == 1000


@pytest.mark.parametrize("model", MODELS)
def test_model_py_is_a_thin_adapter(model: str) -> None:
    source = (REPOSITORY / model / "1" / "model.py").read_text()
    assert len(source.splitlines()) < 150
    tree = ast.parse(source)
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert [cls.name for cls in classes] == ["TritonPythonModel"]
    methods = {node.name for node in classes[0].body if isinstance(node, ast.FunctionDef)}
    assert {"initialize", "execute"} <= methods
    assert "RequestAdapter" in source  # requests are served by qie_engine, not here
