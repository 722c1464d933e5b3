"""Snakemake adapter: image -> FITS cutouts + manifest, of the whole field or one part (radiodet.cutouts)."""

from radiodet.cutouts import CutoutConfig, make_cutouts
from radiodet.images import Beam
from radiodet.logs import configure

with configure(snakemake.log[0]):
    beam = snakemake.params.beam
    make_cutouts(
        snakemake.input.image, snakemake.output.fits, snakemake.output.manifest, snakemake.output.sample,
        field=snakemake.wildcards.field, config=CutoutConfig.from_config(snakemake.params.cutouts),
        regions=snakemake.params.regions,
        plane=tuple(snakemake.params.plane) if snakemake.params.plane is not None else None,
        beam=Beam(*beam) if beam else None, part=snakemake.params.part, parts=snakemake.params.parts,
    )
