"""The `asya` command line."""
