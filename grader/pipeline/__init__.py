"""Grade one submission (grade.py), a batch, its cache and executors, and each command's policy."""
