"""The super entry: third-party services, plans across them, and sagas that carry them out."""
