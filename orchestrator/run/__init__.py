"""The run directory, wherever it lives: its files, partitions, records, buckets, the ledger."""
