"""The bundled tritonserver's python backend sees this interpreter's packages, whatever PATH the caller has.

Regression: the backend stub embeds Python in isolated mode (PYTHONPATH is ignored) and finds its prefix by
looking `python3` up on PATH. Started from a shell without the venv activated (the README demo), it got the
base interpreter's site-packages and every model.py failed on `import numpy`.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from kubestill.dev.triton import start_tritonserver

pytest.importorskip("pytriton")

CONFIG = """name: "where"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "PREFIX" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

# Imports exactly what the student model.py imports first, then answers with the stub's sys.prefix.
MODEL = """
import sys
import numpy as np
import triton_python_backend_utils as pb_utils
import kubestill.api.triton
import kubestill_trainer.serving.loader


class TritonPythonModel:
    def execute(self, requests):
        out = np.array([sys.prefix.encode()], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("PREFIX", out)]) for _ in requests]
"""


def test_model_py_sees_this_interpreters_packages_without_the_venv_on_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = str(Path(sys.executable).absolute().parent)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                               if p and p != venv_bin))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    model = tmp_path / "repo" / "where"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(MODEL)

    with start_tritonserver(tmp_path / "repo", log_file=tmp_path / "triton.log", ready_timeout_s=120) as server:
        body = json.dumps({"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [0.0]}]}).encode()
        request = urllib.request.Request(f"{server.http_url}/v2/models/where/infer", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.load(resp)
    assert answer["outputs"][0]["data"] == [sys.prefix]
