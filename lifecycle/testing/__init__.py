"""Test support, for the project's tests and benchmarks (as ``numpy.testing`` is for numpy's).

Nothing here is used at run time, and nothing here imports torch: a module
of this package imports only the standard library, and heavier packages
inside the functions that need them.
"""
