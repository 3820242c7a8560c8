"""Small runnable lessons: parts of the lecture retold in plain Python, each checked by tests/."""
