"""Downstream tasks: example records, file readers and datasets."""
