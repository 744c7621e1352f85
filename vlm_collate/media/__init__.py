"""Media: the strategies that gather and stack images, video and audio, their readers,
and the token-length estimates made before the processor runs.
"""

from __future__ import annotations

from .._public import publish as _publish
from ._audio import (
    DEFAULT_SAMPLING_RATE,
    AudioMedia,
    load_waveform,
    move_example_audio,
    processor_sampling_rate,
    resample,
)
from ._estimate import (
    estimate_tokens,
    image_config,
    image_tokens,
)
from ._images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    is_remote,
    load_image,
    local_path,
    to_rgb,
)
from ._stack import (
    CONCATENATED_KEYS,
    merge_media,
    stack_media,
)
from ._strategies import (
    MEDIA_KEYS,
    PIXEL_KEYS,
    Conversations,
    MediaStrategy,
    PlainMedia,
    QwenVLUtilsMedia,
    iter_media_items,
    media_token_ids,
    vision_token_ids,
)
from ._video import (
    DecodedVideo,
    frame_indices,
    read_video,
)

__all__ = [
    "AudioMedia",
    "CONCATENATED_KEYS",
    "Conversations",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_SAMPLING_RATE",
    "DecodedVideo",
    "MEDIA_KEYS",
    "MediaStrategy",
    "PIXEL_KEYS",
    "PlainMedia",
    "QwenVLUtilsMedia",
    "estimate_tokens",
    "frame_indices",
    "image_config",
    "image_tokens",
    "is_remote",
    "iter_media_items",
    "load_image",
    "load_waveform",
    "local_path",
    "media_token_ids",
    "merge_media",
    "move_example_audio",
    "processor_sampling_rate",
    "read_video",
    "resample",
    "stack_media",
    "to_rgb",
    "vision_token_ids",
]

_publish(globals(), __all__, "vlm_collate.media")
