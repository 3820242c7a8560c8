"""babygpt's support code: what the four read-along scripts call in one line each. Skip on a first read.

Nothing runs at import: each module is imported by the script that needs it.
"""
