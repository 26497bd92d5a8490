"""Running a pipeline: steps, checkpoints, views over Parquet parts, lineage."""
