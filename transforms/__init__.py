"""The method library: one module per method; each registers its transforms by name."""
