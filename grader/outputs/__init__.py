"""What people read: pages, gradebook, LMS exports, CI and Gradescope outputs. Never grades."""
