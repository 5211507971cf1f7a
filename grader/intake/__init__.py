"""What the TA or the student has (a folder, a zip, an LMS export, mails, one file) ->
Submissions."""
