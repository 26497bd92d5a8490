"""Method building blocks with no I/O of their own: hashing, n-grams, scores."""
