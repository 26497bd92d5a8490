"""Text formats read and written strictly: YAML with no repeated keys, JSON without NaN."""
