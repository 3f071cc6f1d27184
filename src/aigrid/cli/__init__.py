"""The aigrid command line: run the server and administer it over its HTTP API."""
