"""The simulator's one error, raised by every part of it and told by its callers."""


class SimulateError(Exception):
    """A simulation that cannot run: a bad route file, option or broker."""
