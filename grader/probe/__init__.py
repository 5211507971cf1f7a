"""The only grader code that runs inside the student's kernel (see runtime.py)."""
