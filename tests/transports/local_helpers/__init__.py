"""Subprocess workers for test_local.py: sidecar-like processes sharing one state dir."""
