"""The `asya` command line."""

__all__: list[str] = []
