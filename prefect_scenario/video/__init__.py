"""Local media work on PyAV: probe, sample clips, split/join/fit, layer composites, previews.

What the product's flows, demo and tests use: probe clips and images before money is spent, cut
and join clips to fit a model's limits, composite layer files back together and measure them
against the source, and draw previews (composite clips, contact sheets). Never imports prefect,
httpx or the emulator (whose fake models build on :mod:`.media_io`, the PyAV primitives). Work
streams frame by frame. Outputs are deterministic: the same inputs give the same bytes
(single-threaded encoders, bit-exact muxing).
"""

from ._errors import MediaError
from .edit import ChunkSpan, concat_videos, fit_to_limits, plan_split, split_video
from .layers import composite_layers, layers_psnr, psnr_against_source
from .probe import ImageProbe, VideoProbe, mime_type_for, probe_image, probe_video
from .samples import make_sample_clip, make_sample_image
from .sheets import composite_preview, contact_sheet, first_frames_sheet, layer_name

__all__ = [
    "ChunkSpan",
    "ImageProbe",
    "MediaError",
    "VideoProbe",
    "composite_layers",
    "composite_preview",
    "concat_videos",
    "contact_sheet",
    "first_frames_sheet",
    "fit_to_limits",
    "layer_name",
    "layers_psnr",
    "make_sample_clip",
    "make_sample_image",
    "mime_type_for",
    "plan_split",
    "probe_image",
    "probe_video",
    "psnr_against_source",
    "split_video",
]
