"""`TritonSession`: a graph of the exported model served by a Triton Inference Server.

The exporter's Triton repository names the models as `runtime.contract.TRITON_MODEL_NAMES` says
(`boxmask_encoder`, `boxmask_decoder`, `boxmask_detector`), with the tensor names of docs/contracts.md §4. Both of Triton's protocols
work: HTTP (`host:8000`) and gRPC (`host:8001`). A model whose config has `max_batch_size > 0`
gets a leading batch dimension of 1 added to each input and removed from each output.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from boxmask.runtime.errors import BackendUnavailable

Protocol_ = Literal["http", "grpc"]


def _client_module(protocol: Protocol_) -> Any:
    try:
        if protocol == "http":
            import tritonclient.http as module
        elif protocol == "grpc":
            import tritonclient.grpc as module
        else:
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    except ImportError as e:
        raise BackendUnavailable(
            f"the Triton backend needs tritonclient[{protocol}] (pip install 'boxmask[triton]'): {e}"
        ) from e
    return module


def split_url(url: str) -> tuple[str, Protocol_ | None]:
    """`grpc://host:8001` -> ("host:8001", "grpc"); `http://host:8000` -> ("host:8000", "http")."""
    for scheme in ("http", "grpc"):
        prefix = f"{scheme}://"
        if url.startswith(prefix):
            return url[len(prefix) :].rstrip("/"), scheme
    return url.rstrip("/"), None


class TritonSession:
    """One model on a Triton server, reached with `tritonclient`.

    url: `host:port`, or with a scheme (`grpc://host:8001`) that then picks the protocol.
    tritonclient's HTTP client is not thread-safe, so each thread gets its own client.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        protocol: Protocol_ = "http",
        model_version: str = "",
        timeout_s: float = 60.0,
    ) -> None:
        address, scheme = split_url(url)
        self.url = address
        self.protocol: Protocol_ = scheme or protocol
        self.model_name = model_name
        self.model_version = model_version
        self.timeout_s = timeout_s
        self._module = _client_module(self.protocol)
        self._local = threading.local()

        client = self._client()
        try:
            if not client.is_server_live():
                raise BackendUnavailable(f"Triton at {self.url} is not live")
            if not client.is_model_ready(model_name, model_version):
                raise BackendUnavailable(f"Triton at {self.url} has no ready model {model_name!r}")
            metadata = (
                client.get_model_metadata(model_name, model_version, as_json=True)
                if self.protocol == "grpc"
                else client.get_model_metadata(model_name, model_version)
            )
            config = (
                client.get_model_config(model_name, model_version, as_json=True)
                if self.protocol == "grpc"
                else client.get_model_config(model_name, model_version)
            )
        except BackendUnavailable:
            raise
        except Exception as e:  # connection refused, timeouts, InferenceServerException
            raise BackendUnavailable(
                f"Triton at {self.url} ({self.protocol}) is unavailable: {e}"
            ) from e
        config = config.get("config", config)  # gRPC wraps the config in {"config": ...}
        self._batched = int(config.get("max_batch_size", 0) or 0) > 0
        self._inputs = {i["name"]: i["datatype"] for i in metadata["inputs"]}
        self._outputs = [o["name"] for o in metadata["outputs"]]

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "http":
                client = self._module.InferenceServerClient(
                    self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            else:
                client = self._module.InferenceServerClient(self.url)
            self._local.client = client
        return client

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def is_ready(self) -> bool:
        try:
            return bool(self._client().is_model_ready(self.model_name, self.model_version))
        except Exception:  # noqa: BLE001
            return False

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = list(output_names) if output_names is not None else self._outputs
        requests = []
        for name, datatype in self._inputs.items():
            value = np.ascontiguousarray(inputs[name])
            if self._batched:
                value = value[None]
            tensor = self._module.InferInput(name, list(value.shape), datatype)
            tensor.set_data_from_numpy(value)
            requests.append(tensor)
        outputs = [self._module.InferRequestedOutput(name) for name in names]
        try:
            if self.protocol == "http":
                result = self._client().infer(
                    self.model_name, requests, self.model_version, outputs=outputs, timeout=None
                )
            else:
                result = self._client().infer(
                    self.model_name,
                    requests,
                    self.model_version,
                    outputs=outputs,
                    client_timeout=self.timeout_s,
                )
        except Exception as e:  # connection refused, timeouts, InferenceServerException
            raise BackendUnavailable(
                f"Triton inference on {self.model_name!r} at {self.url} failed: {e}"
            ) from e
        values = {name: result.as_numpy(name) for name in names}
        if self._batched:
            values = {name: v[0] for name, v in values.items()}
        return values

    def describe(self) -> str:
        return f"triton {self.model_name} at {self.protocol}://{self.url}"
