"""Backends: the plants a deployment draws tokens from."""
