"""The Asya crew: the system actors x-sink and x-sump.

Both are ordinary actors: a handler class served by the standard runtime next to a sidecar.
x-sink stores the record of every finished envelope and forwards failures to x-sump; x-sump
stores and counts everything that could not be processed. Records go to a result store named
by URL (file://, s3://). Start one with `asya crew sink|sump` or `python -m asya_crew ...`.

Nothing here talks to a broker: queues are the sidecar's business.
"""

from __future__ import annotations

from asya_crew.main import run
from asya_crew.sink import Sink
from asya_crew.sump import Sump

__all__ = ["Sink", "Sump", "run"]
