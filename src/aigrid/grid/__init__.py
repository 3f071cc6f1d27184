"""The grid: backends (plants), the router, the meter and the OpenAI-compatible API."""
