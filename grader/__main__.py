"""`python -m grader` runs the command line."""

from grader.cli import console_main

console_main()
