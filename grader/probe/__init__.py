"""The only grader code that runs inside the student's kernel (see runtime.py)."""

from grader.probe.schema import RECORD_VERSION as RECORD_VERSION  # the record's format (schema.py)
