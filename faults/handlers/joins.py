"""Handlers of the fan-out and join scenario, loaded by the real runtime.

split -> work -> x-join -> steps.last: `split` fans its envelope out into payload["parts"]
parts, `work` doubles each part's index, and x-join gathers the parts into one envelope
(the splitter's payload with "results") that goes on to the last hop, which records the
call under the origin id.
"""

import time


def split(payload):
    work_s = payload.get("work_s", 0.002)
    return [{"i": i, "work_s": work_s} for i in range(payload["parts"])]


def work(payload):
    # A little work, so that parts keep arriving at x-join while it is killed.
    time.sleep(payload["work_s"])
    return payload["i"] * 2
