"""Image format conversion that runs on the cluster: OME-Zarr in, TIFF out."""
