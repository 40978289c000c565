"""Fuzz targets, one per parser; see docs/fuzzing.md."""
