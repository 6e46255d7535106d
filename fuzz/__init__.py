"""Coverage-guided fuzz targets for the parsers that face the network (see fuzz/run.py)."""
