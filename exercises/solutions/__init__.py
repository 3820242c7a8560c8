"""One answer to each exercise: `python -m exercises check NAME --solutions` runs the checks on them."""
