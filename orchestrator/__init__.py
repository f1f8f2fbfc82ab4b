"""The Ray driver: dataset scan, splits, the Ray Train launch, Ray Data writes and the CLI."""
