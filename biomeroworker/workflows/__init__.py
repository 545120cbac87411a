"""Workflows: BIAFLOWS descriptors, parameter validation and job-script rendering."""
