"""Points: thresholds, the verdicts that count, lateness, borderline seeds, overrides. Runs
nothing."""
