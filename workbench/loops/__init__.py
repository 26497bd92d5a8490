"""On-policy rounds: config, the loop, training a round, its report."""
