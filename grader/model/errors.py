"""Errors the user can act on. Their text is one line that says what to do."""


class GraderError(Exception):
    """An input or setup problem reported to the user as one line (exit code 2)."""


class RubricError(GraderError):
    """rubric.yaml is missing or a field is wrong; the message names the field."""


class DataError(GraderError):
    """The rubric's dataset (FashionMNIST by default) could not be found, prepared or verified."""


class SubmissionError(GraderError):
    """A submission file cannot be read as a notebook or a script."""
