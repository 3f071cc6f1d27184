"""Durable state: the database schema, migrations and the stores over them."""
