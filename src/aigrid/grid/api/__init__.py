"""The HTTP face of the grid: the OpenAI-compatible API, the admin API and metrics."""
