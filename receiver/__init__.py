"""Alertmanager webhook receiver that contains a failing tenant's blast radius."""

__version__ = "0.1.0"
