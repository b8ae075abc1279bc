"""Pure domain: breaker transitions, priorities, incidents, postmortems.

Nothing in this package performs I/O or reads the clock: time comes in as an argument.
"""
