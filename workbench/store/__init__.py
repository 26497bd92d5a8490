"""The workspace's storage: the DuckDB catalog, atomic files and locks, gc."""
