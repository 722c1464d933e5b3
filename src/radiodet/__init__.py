"""radiodet: radio survey images and catalogues to machine-learning datasets.

Stages, one module each, called by the thin Snakemake scripts in
``workflow/scripts``:

``catalogues``  catalogue files -> typed Parquet (:mod:`radiodet.schema`)
``cutouts``     FITS image -> FITS cutouts with their own WCS + a manifest
``views``       cutouts -> PNG / NPY views with a field-wide scaling
``index``       footprints and sources -> PostGIS, one spatial join
``filtering``   local noise, primary beam, SNR and the k x rms cut
``boxes``       sky ellipses -> pixel bounding boxes
``coco``        COCO annotation files
``preview``     cutouts with their boxes drawn, for people

Conventions used everywhere (see the README):

* pixel coordinates are 0-based, (x, y) = (column, row) of the FITS array as
  stored; pixel (0, 0) covers [-0.5, 0.5) in WCS pixel terms;
* RA is in degrees in [0, 360), Dec in degrees;
* position angles are degrees east of north (counter-clockwise from north
  towards east on the sky), folded into [0, 180);
* sizes are Gaussian FWHM in arcsec unless a column says otherwise.
"""

__version__ = "0.1.0"
