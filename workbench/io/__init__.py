"""Reading, importing and exporting datasets."""
