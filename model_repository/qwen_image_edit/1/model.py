"""Triton adapter for Qwen-Image-Edit; the logic lives in qie_engine."""

import dataclasses
import json
import os
import signal
import sys

# Triton's Python stub ignores PYTHONPATH; honour it so qie_engine and its packages import.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p not in sys.path]

import triton_python_backend_utils as pb_utils

from qie_engine import contract, json_logging
from qie_engine.model_config import qwen_settings, read_parameters
from qie_engine.qwen_loader import load_editor
from qie_engine.triton_adapter import RequestAdapter


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        return contract.auto_complete(auto_complete_model_config)

    def initialize(self, args):
        json_logging.configure(os.environ.get("LOG_LEVEL", "INFO"))
        params = read_parameters(json.loads(args["model_config"]), os.environ)
        settings = qwen_settings(params)
        if args["model_instance_kind"] == "GPU":
            # One instance per GPU: each one owns the device Triton placed it on. load_editor
            # makes it the current CUDA device before any weight is read, and lets the
            # instances of one host read their weights one at a time.
            device = f"cuda:{args['model_instance_device_id']}"
            settings = dataclasses.replace(settings, device=device)
        # load_editor warms up before it returns, so Triton reports ready only once that is done.
        self.adapter = RequestAdapter(load_editor(args["model_name"], settings), pb_utils)
        # start_triton.sh passes SIGTERM on to this stub: a running edit stops within its step.
        signal.signal(signal.SIGTERM, lambda _signal, _frame: self.adapter.stop())

    def execute(self, requests):
        for request in requests:
            self.adapter.serve(request)
