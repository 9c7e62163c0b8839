"""The servers the callers are tested against: the real model servers, one of each per
session, and a scripted HTTP server for statuses a model server will not give on demand."""

from tests.support.llama_server import llama_server, start_llama_server
from tests.support.mlserver import mlserver
from tests.support.scripted_server import scripted_server

__all__ = ["llama_server", "mlserver", "scripted_server", "start_llama_server"]
