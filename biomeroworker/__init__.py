"""BIOMERO worker: run OMERO image-analysis workflows on Slurm clusters."""

__version__ = "0.1.0"
