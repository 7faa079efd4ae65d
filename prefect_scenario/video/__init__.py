"""Local media work on PyAV: probe, sample clips, the emulator's fake models, split/join, previews.

Never imports prefect or httpx. Work streams frame by frame; only the layer extractor's background
median holds a bounded sample of frames. Outputs are deterministic: the same inputs give the same
bytes (single-threaded encoders, bit-exact muxing).
"""

from ._errors import MediaError
from .edit import ChunkSpan, concat_videos, fit_to_limits, plan_split, split_video
from .layers import LayerFile, composite_layers, extract_layers, layers_psnr, psnr_against_source
from .probe import ImageProbe, VideoProbe, mime_type_for, probe_image, probe_video
from .restyle import StyleReference, restyle_video
from .samples import make_sample_clip, make_sample_image
from .sheets import composite_preview, contact_sheet, first_frames_sheet

__all__ = [
    "ChunkSpan",
    "ImageProbe",
    "LayerFile",
    "MediaError",
    "StyleReference",
    "VideoProbe",
    "composite_layers",
    "composite_preview",
    "concat_videos",
    "contact_sheet",
    "extract_layers",
    "first_frames_sheet",
    "fit_to_limits",
    "layers_psnr",
    "make_sample_clip",
    "make_sample_image",
    "mime_type_for",
    "plan_split",
    "probe_image",
    "probe_video",
    "psnr_against_source",
    "restyle_video",
    "split_video",
]
