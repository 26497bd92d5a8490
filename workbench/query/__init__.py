"""SQL and expressions typed by people: parsing, limits, the locked-down connection."""
