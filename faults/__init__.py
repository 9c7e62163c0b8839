"""Asya under faults: `python -m faults` (`make faults`).

Each scenario runs a 3-hop pipeline (a -> b -> c) as `asya dev` runs it, on one broker, feeds
it envelopes with unique ids, injects one kind of fault again and again, then reads x-sink and
x-sump and counts per id what happened. See docs/reliability.md for what the numbers mean.
"""
