"""Small runnable lessons that retell a part of the lecture in plain Python, each checked against model.py."""
