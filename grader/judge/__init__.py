"""Trusted: what the run did and what the model achieved, computed from the probe's record. Runs
nothing."""
