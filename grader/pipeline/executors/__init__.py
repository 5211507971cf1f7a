"""Where a batch's jobs run: this machine's slots (local.py) or a Ray cluster (ray.py)."""
