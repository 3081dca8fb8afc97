"""``posecli benchmark``'s parts: peaks.py (the device's own attainable GFLOP/s), machine.py (what ran
it, what else ran), timing.py (timed model and pipeline runs), run.py (which settings, the whole run)."""
