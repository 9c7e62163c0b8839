"""Vocabulary shared by every Asya process: the sidecar, the transports, the crew, the CLI and
the operator.

Names and the pure rules about them: queue and actor naming (names.py), environment variable
names (env.py), durations (durations.py), and the JSON shapes that cross process boundaries
(wire.py). No I/O, and no imports from other asya packages: everything else may import this,
this imports nothing of ours (an import contract in pyproject.toml checks it).
"""

__all__: list[str] = []
