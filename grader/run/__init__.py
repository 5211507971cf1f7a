"""The only code that starts processes: the student's kernel in its sandbox, and helper children."""
