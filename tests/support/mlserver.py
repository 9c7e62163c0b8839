"""Seldon MLServer, a real Open Inference Protocol (KServe V2) server, for the tests of
asya_callers.inference_v2.

The session fixture `mlserver` trains a small scikit-learn model on iris (in .venv-mlserver,
where scikit-learn lives; the project venv does not carry it) and serves it as `iris`,
version `v1`. Its `predict` output is the class (INT64, shape [rows, 1]) and its
`predict_proba` output the three class probabilities (FP64, shape [rows, 3]).

A test that needs a server of its own (one that starts after the actor, say) builds an
`MLServer` over the same trained model, on a fresh port, and starts and stops it itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.services import ServiceFailed, ServiceProcess, free_port, run_python
from tests.support.waiting import wait_until

__all__ = ["IRIS_ROWS", "MLServer", "ServedModel", "mlserver", "train_iris"]

MLSERVER_VENV = Path(__file__).resolve().parents[2] / ".venv-mlserver"
MLSERVER_PYTHON = MLSERVER_VENV / "bin" / "python"
MLSERVER_BIN = MLSERVER_VENV / "bin" / "mlserver"
# Loading scikit-learn and the model takes a few seconds on a small machine.
MODEL_READY_TIMEOUT_S = 90.0

# One canonical row of each iris species (setosa, versicolor, virginica): dataset rows 0, 50
# and 100, which the model below classifies as 0, 1 and 2.
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]

# Run with .venv-mlserver's Python: the fit is deterministic (lbfgs, no random state used).
TRAIN_SCRIPT = """
import sys
import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

features, species = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=1000).fit(features, species)
predicted = model.predict(features[[0, 50, 100]]).tolist()
assert predicted == [0, 1, 2], f"the iris model predicts {predicted} for rows 0, 50, 100"
joblib.dump(model, sys.argv[1])
"""


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str | None
    uri: Path  # the joblib file

    def settings(self) -> dict[str, object]:
        parameters: dict[str, object] = {"uri": str(self.uri)}
        if self.version is not None:
            parameters["version"] = self.version
        return {
            "name": self.name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": parameters,
        }


def require_venv() -> None:
    if not (MLSERVER_BIN.exists() and (MLSERVER_VENV / ".installed-stamp").exists()):
        pytest.fail(
            f"Seldon MLServer is not installed in {MLSERVER_VENV}: run `make model-servers` "
            "(it builds the venv once, from requirements/mlserver.txt)"
        )


def train_iris(dest: Path) -> Path:
    """Fit the iris classifier and save it with joblib at `dest`."""
    require_venv()
    run_python(MLSERVER_PYTHON, TRAIN_SCRIPT, str(dest), doing="training the iris model")
    return dest


class MLServer:
    """One `mlserver start` process serving `models` from its own repository directory."""

    def __init__(self, root: Path, models: list[ServedModel]) -> None:
        require_venv()
        self.root = root
        self.models = models
        self.service = ServiceProcess("MLServer", self._argv, cwd=root)

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def port(self) -> int:
        return self.service.port

    def _argv(self, port: int) -> list[str]:
        # Written at each start: the gRPC and metrics ports are picked afresh, and
        # parallel_workers 0 keeps inference in the server process, because the worker
        # processes crash at start with the uvloop release installed here.
        self.root.mkdir(parents=True, exist_ok=True)
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,
        }
        (self.root / "settings.json").write_text(json.dumps(settings))
        for model in self.models:
            folder = self.root / model.name
            folder.mkdir(exist_ok=True)
            (folder / "model-settings.json").write_text(json.dumps(model.settings()))
        return [str(MLSERVER_BIN), "start", str(self.root)]

    def start(self) -> None:
        self.service.start()

        def all_ready() -> bool:
            for model in self.models:
                try:
                    status = httpx.get(f"{self.url}/v2/models/{model.name}/ready").status_code
                except httpx.HTTPError:
                    return False
                if status != 200:
                    return False
            return True

        try:
            wait_until(
                all_ready,
                what=f"MLServer on port {self.port} to load {[m.name for m in self.models]}",
                timeout=MODEL_READY_TIMEOUT_S,
                interval=0.2,
            )
        except AssertionError as exc:
            output = self.service.output()
            self.service.stop()
            raise ServiceFailed(f"{exc}; MLServer's output:\n{output}") from exc

    def stop(self) -> None:
        self.service.stop()

    def output(self) -> str:
        return self.service.output()


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLServer]:
    models = tmp_path_factory.mktemp("mlserver-models")
    iris = ServedModel("iris", "v1", train_iris(models / "iris.joblib"))
    server = MLServer(tmp_path_factory.mktemp("mlserver"), [iris])
    server.start()
    yield server
    server.stop()
