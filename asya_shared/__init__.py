"""Vocabulary shared by every Asya process: the sidecar, the transports, the crew, the CLI and
the operator.

Names and the pure rules about them: queue and actor naming (names.py), environment variable
names (env.py), durations (durations.py), the JSON shapes that cross process boundaries
(wire.py), statuses and reasons (statuses.py), records and their redrive (records.py,
redrive.py). Pure, except for the result stores (stores/) and SQLite files (sqlite_files.py)
that several processes open the same way. No imports from other asya packages: everything
else may import this, this imports nothing of ours (an import contract in pyproject.toml
checks it).
"""

__all__: list[str] = []
