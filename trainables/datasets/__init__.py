"""Lesion-dataset loaders, each reading a dataset exactly as it is distributed."""
