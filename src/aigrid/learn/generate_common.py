"""What every generated split shares: the fixed random seed, and the default of leaving no text out."""

RANDOM_SEED = 17


def never(text: str) -> bool:
    """Leave no text out: the default ``leave_out`` of the compiler's and the tool-calling suites' makers."""
    return False
