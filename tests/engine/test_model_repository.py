"""The Triton model repository: one tensor contract written once (qie_engine/contract.py, added by
each model's auto_complete_config), decoupled models, thin model.py adapters."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from qie_engine import contract
from qie_engine.contract import Preset
from qie_engine.model_config import OVERRIDABLE, qwen_settings, read_parameters, request_limits

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
MODELS = sorted(path.parent.name for path in REPOSITORY.glob("*/config.pbtxt"))
CONFIGS = sorted(REPOSITORY.glob("*/config.pbtxt")) + sorted(REPOSITORY.glob("*/configs/*.pbtxt"))

# The order of docs/tensor-contract.md.
CONTRACT_INPUTS = [
    {"name": "IMAGES", "data_type": "TYPE_STRING", "dims": [-1], "optional": True},
    {"name": "PROMPT", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "NEGATIVE_PROMPT", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "OPTIONS", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "DESCRIBE", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "MASK", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
]
CONTRACT_OUTPUTS = [
    {"name": "EVENT", "data_type": "TYPE_STRING", "dims": [1]},
    {"name": "IMAGE", "data_type": "TYPE_STRING", "dims": [1]},
]


def backend_utils() -> ModuleType:
    """triton_python_backend_utils as the Python backend ships it (in the nvidia-pytriton wheel):
    its ModelConfig is what auto_complete_config is handed."""
    spec = importlib.util.find_spec("pytriton")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "tritonserver" / "backends" / "python"
    module_spec = importlib.util.spec_from_file_location(
        "triton_python_backend_utils", path / "triton_python_backend_utils.py"
    )
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


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


def as_triton_json(path: Path) -> str:
    """The config as Triton hands it to auto_complete_config: JSON, every field present."""
    data: dict[str, Any] = json_format.MessageToDict(
        load(path), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(data)


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_config_pbtxt_declares_no_tensors_the_contract_is_their_one_home(path: Path) -> None:
    config = load(path)
    assert not config.input and not config.output
    assert not config.HasField("model_transaction_policy")


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_auto_complete_gives_every_model_the_one_decoupled_contract(path: Path) -> None:
    config = backend_utils().ModelConfig(as_triton_json(path))
    completed = contract.auto_complete(config).as_dict()
    assert completed["input"] == CONTRACT_INPUTS
    assert completed["output"] == CONTRACT_OUTPUTS
    assert completed["model_transaction_policy"]["decoupled"] is True
    assert completed["max_batch_size"] == 0


@pytest.mark.parametrize("model", MODELS)
def test_every_model_py_completes_its_config_from_the_contract(model: str) -> None:
    tree = ast.parse((REPOSITORY / model / "1" / "model.py").read_text())
    model_class = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    hook = next(
        node
        for node in model_class.body
        if isinstance(node, ast.FunctionDef) and node.name == "auto_complete_config"
    )
    assert "contract.auto_complete" in ast.unparse(hook)


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_every_parameter_can_be_overridden_from_the_environment(path: Path) -> None:
    assert set(load(path).parameters) <= set(OVERRIDABLE)


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


def doc_table(section: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, wire type, dims) of each row of a table in docs/tensor-contract.md."""
    text = (REPOSITORY.parent / "docs" / "tensor-contract.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in body.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        if len(cells) >= 3 and cells[1] in ("BYTES", "BOOL"):
            dims = tuple(int(d) for d in cells[2].strip("[]").split(","))
            rows.append((cells[0], cells[1], dims))
    return rows


def test_the_contract_document_states_the_contract() -> None:
    def wire(tensor: contract.TensorSpec) -> tuple[str, str, tuple[int, ...]]:
        kind = "BYTES" if tensor.data_type == "TYPE_STRING" else "BOOL"
        return (tensor.name, kind, tensor.dims)

    assert doc_table("Inputs") == [wire(t) for t in contract.INPUTS]
    assert doc_table("Outputs") == [wire(t) for t in contract.OUTPUTS]
