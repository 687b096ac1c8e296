"""netcheck: can this laptop keep working on Microsoft 365 if its site goes down?

The public surface is small on purpose; heavier modules are imported lazily so
that ``netcheck --help`` starts fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
