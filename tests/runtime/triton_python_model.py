"""A Triton Python-backend model that runs one ONNX graph of the exported model with ONNX Runtime.

Used only by tests/runtime/test_triton_session.py: the `tritonserver` that the registry ships
(nvidia-pytriton 0.7.0) has the Python backend but no ONNX Runtime backend, so each model of
the exporter's repository (`boxmask_encoder`, `boxmask_decoder`, `boxmask_detector`) is served
by this file, placed beside the exporter's `1/model.onnx`, instead of `backend: "onnxruntime"`;
the rest of the exporter's config.pbtxt (tensor names, types, dims, batching, instances) is
what Triton loads and checks requests against. Triton itself is real: HTTP, gRPC, model
metadata and configs, tensor (de)serialisation are the server's.

Tensors cross the stub through DLPack, not `as_numpy()` / `Tensor(name, ndarray)`: the stub's
pybind11 reads numpy 1.x array descriptors and gets empty buffers from numpy 2 arrays.
"""

import json
import sys

import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend stub


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        # The stub starts its own interpreter; it finds the test venv's packages only this way.
        sys.path.insert(0, params["site_packages"])
        import numpy as np
        import onnxruntime as ort

        self.np = np
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        # The exporter's graph, in this model's version folder of the repository.
        onnx_path = f"{args['model_repository']}/{args['model_version']}/model.onnx"
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {
                name: self.np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name))
                for name in self.inputs
            }
            values = self.session.run(self.outputs, feed)
            tensors = [
                pb_utils.Tensor.from_dlpack(name, self.np.ascontiguousarray(value))
                for name, value in zip(self.outputs, values, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
