"""Media: the strategies that gather and stack images, video and audio, their readers,
and the token-length estimates made before the processor runs.
"""

from __future__ import annotations

from .._public import publish as _publish
from ._access import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_SAMPLING_RATE,
    MediaAccess,
    MediaSource,
    current_access,
    local_path,
    resolve_media,
    using_access,
)
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
from ._fetch import (
    fetch,
)
from ._images import (
    decode_image,
    is_remote,
    load_image,
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
    is_media_reference,
    iter_media_items,
    media_token_ids,
    vision_token_ids,
)
from ._video import (
    DecodedVideo,
    frame_indices,
    kept_count,
    read_video,
    read_video_item,
    video_options,
)

__all__ = [
    "AudioMedia",
    "CONCATENATED_KEYS",
    "Conversations",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_SAMPLING_RATE",
    "DecodedVideo",
    "MAX_SAMPLING_RATE",
    "MEDIA_KEYS",
    "MediaAccess",
    "MediaSource",
    "MediaStrategy",
    "PIXEL_KEYS",
    "PlainMedia",
    "QwenVLUtilsMedia",
    "current_access",
    "decode_image",
    "estimate_tokens",
    "fetch",
    "frame_indices",
    "image_config",
    "image_tokens",
    "is_media_reference",
    "is_remote",
    "iter_media_items",
    "kept_count",
    "load_image",
    "load_waveform",
    "local_path",
    "media_token_ids",
    "merge_media",
    "move_example_audio",
    "processor_sampling_rate",
    "read_video",
    "read_video_item",
    "resample",
    "resolve_media",
    "stack_media",
    "to_rgb",
    "using_access",
    "video_options",
    "vision_token_ids",
]

_publish(globals(), __all__, "vlm_collate.media")
