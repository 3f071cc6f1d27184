"""The web console: a single page at ``/`` that reads and acts through the same JSON API as the CLI."""
