"""The data a pass trains on: the scan, the image cache, the splits."""
