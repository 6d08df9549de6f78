"""Triton adapter for the classic instruction editor; the logic lives in qie_engine."""

import json
import os
import sys

# Triton's Python stub ignores PYTHONPATH; honour it so qie_engine and its packages import.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p not in sys.path]

import triton_python_backend_utils as pb_utils

from qie_engine import contract, json_logging
from qie_engine.classic_editor import ClassicEditor
from qie_engine.model_config import read_parameters, request_limits
from qie_engine.triton_adapter import RequestAdapter


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        return contract.auto_complete(auto_complete_model_config)

    def initialize(self, args):
        json_logging.configure(os.environ.get("LOG_LEVEL", "INFO"))
        params = read_parameters(json.loads(args["model_config"]), os.environ)
        editor = ClassicEditor(args["model_name"], request_limits(params))
        self.adapter = RequestAdapter(editor, pb_utils)

    def execute(self, requests):
        for request in requests:
            self.adapter.serve(request)
