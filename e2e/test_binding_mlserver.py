"""An AsyaBinding under `asya dev`: the real Seldon MLServer behind a bridge binding, in the
middle of a small pipeline (a -> iris -> b).

The binding is the manifest a cluster would take (workloadRef, transport, caller), with
spec.endpoint pointing at the local server: `asya dev` runs it as the bridge actor the
operator would deploy, the inference-v2 caller pointed at that URL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.asya_dev import running_dev
from tests.support import mlserver as mlserver_support
from tests.support.mlserver import IRIS_ROWS, MLServer

pytestmark = [pytest.mark.slow, pytest.mark.model_servers]

# The session's MLServer (the iris classifier, version v1), shared with the callers' tests.
mlserver = mlserver_support.mlserver

ACTORS = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: a}
spec: {handler: flow.mark_a}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: b}
spec: {handler: flow.mark_b}
"""

BINDING = """\
apiVersion: asya.sh/v1alpha1
kind: AsyaBinding
metadata: {name: iris}
spec:
  workloadRef: {kind: Deployment, name: iris-predictor}
  transport: {name: rabbitmq}
  scaling: {enabled: true, minReplicas: 0, maxReplicas: 4}
  caller:
    protocol: inference-v2
    port: 8080
    model: iris
    version: v1
    inputs: rows
  mode: bridge
  endpoint: %s
"""


def test_a_bridge_binding_calls_the_model_server_in_a_pipeline(
    tmp_path: Path, mlserver: MLServer
) -> None:
    files = {"actors.yaml": ACTORS, "binding.yaml": BINDING % mlserver.url}
    with running_dev(tmp_path, files) as dev:
        payload = json.dumps({"trail": [], "rows": IRIS_ROWS})
        result = dev.asya("submit", "a,iris,b", "--payload", payload, "--wait", "90")
        assert result.returncode == 0, result.stderr + dev.output()
        task = json.loads(result.stdout)
        assert task["status"] == "succeeded", task
        assert task["route"]["prev"] == ["a", "iris", "b"]
        answer = task["result"]
        assert answer["trail"] == ["a", "b"]
        assert answer["rows"] == IRIS_ROWS
        assert answer["outputs"]["predict"] == {
            "data": [[0], [1], [2]],
            "shape": [3, 1],
            "datatype": "INT64",
        }
    # The server saw the calls of the binding's caller, at its versioned model path.
    assert '"POST /v2/models/iris/versions/v1/infer HTTP/1.1"' in mlserver.output()
