"""Live feature extractors, shared by streaming ingest and the offline `extract` command."""
