"""``python -m training``: argument parsing and the command bodies (the only layer that reads ``argv``)."""
