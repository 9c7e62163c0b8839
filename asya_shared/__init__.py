"""Vocabulary shared by the sidecar, the crew, the CLI and the operator.

Only names and the pure rules about them (queue naming, env var names). No I/O, and no imports
from other asya packages: everything else may import this, this imports nothing of ours.
"""
