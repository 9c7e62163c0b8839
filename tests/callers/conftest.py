"""The servers the callers are tested against: the real model servers, one of each per
session, and a scripted HTTP server for statuses a model server will not give on demand."""

from tests.support.scripted_server import scripted_server

