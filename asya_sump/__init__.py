"""The sump, read and redriven: the I/O around asya_shared.redrive's decisions, shared by
`asya sump` / `asya redrive` (asya_cli.sump) and the gateway's sump API and page.

It reads sump records from a result store (asya_shared.stores), sends each planned envelope
to its actor's queue through a transport (asya_transports), and removes a record only once
the send returned. It imports nothing of Asya's but those two packages (an import contract
in pyproject.toml checks it); the submodules are imported by name.
"""

__all__: list[str] = []
