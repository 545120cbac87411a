"""The worker's side of OMERO: the one subpackage that talks to omero-py.

Modules that import omero do so themselves; importing this package does not, so
pure helpers here (``processor_env``) work where omero-py is not installed.
"""
