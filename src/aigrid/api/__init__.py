"""The HTTP surface: one router module per area, and the app's assembly (``app.py``)."""
