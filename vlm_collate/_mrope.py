"""3-D rotary positions (mRoPE) of one sample, as the model itself computes them.

Qwen2-VL, Qwen2.5-VL and Qwen3-VL give image and video tokens
(temporal, height, width) positions, and the text after an image resumes
from the image's largest position rather than from its token count. A model
computes these positions itself only for a padded row that holds one sample;
a padding-free or packed row holds several, so the collator must compute
each sample's positions alone and lay them end to end.

[`MRopeIndex`][vlm_collate.MRopeIndex] calls the model class's own ``get_rope_index`` on an
instance that has a config but no weights, so positions follow the
installed ``transformers`` exactly, including its future fixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import attrs
import torch

from .errors import ConfigurationError

__all__ = ["MROPE_PROCESSORS", "MRopeIndex"]

# Processor class name -> transformers config class name of the model it feeds.
MROPE_PROCESSORS: Mapping[str, str] = {
    "Qwen2VLProcessor": "Qwen2VLConfig",
    "Qwen2_5_VLProcessor": "Qwen2_5_VLConfig",
    "Qwen3VLProcessor": "Qwen3VLConfig",
    "Qwen3VLMoeProcessor": "Qwen3VLMoeConfig",
}
# mRoPE processors whose models take audio too: their get_rope_index needs audio lengths.
_AUDIO_MROPE_PROCESSORS = frozenset({"Qwen2_5OmniProcessor", "Qwen3OmniMoeProcessor"})


def _model_class(config: Any) -> type:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        # The lazy mapping's stub returns a pair; its values are model classes.
        model_class = cast("type[Any]", MODEL_MAPPING[type(config)])
    except KeyError:
        model_class = None
    if model_class is None or not hasattr(model_class, "get_rope_index"):
        name = type(config).__name__
        msg = f"'config' must be an mRoPE model's config with get_rope_index (got {name})."
        raise ConfigurationError(msg)
    return model_class


@attrs.frozen(kw_only=True)
class MRopeIndex:
    """One sample's ``[3, n]`` positions from the model class's ``get_rope_index``.

    Build it from the checkpoint's config (``MRopeIndex.from_config(
    AutoConfig.from_pretrained(path))``), which is exact for every input, or
    let a collator derive it from the processor (`from_processor`),
    which is exact for text and images; videos then need the config, since
    ``tokens_per_second`` is a model setting the processor does not hold.

    Args:
        config: The model's ``transformers`` config (the composite VL config).
        derived: True when the config was built from a processor, not read
            from a checkpoint.
    """

    config: Any
    derived: bool = False
    _model: Any = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # A bare instance: the class's methods with this config, no module init, no weights.
        model: Any = object.__new__(_model_class(self.config))
        model.__dict__["config"] = self.config
        object.__setattr__(self, "_model", model)

    @classmethod
    def from_config(cls, config: Any) -> MRopeIndex:
        """Positions exactly as the model built from ``config`` computes them."""
        return cls(config=config)

    @classmethod
    def from_processor(cls, processor: Any) -> MRopeIndex:
        """Positions for the model ``processor`` feeds, with its merge size and token ids."""
        name = type(processor).__name__
        if name in _AUDIO_MROPE_PROCESSORS:
            msg = (
                f"padding-free batches for {name} need 'rope_index': a callable giving one "
                "sample's [3, n] positions (the Omni models' get_rope_index also needs audio "
                "lengths, which this collator does not derive)."
            )
            raise ConfigurationError(msg)
        import transformers

        config_class = getattr(transformers, MROPE_PROCESSORS[name])
        merge = getattr(getattr(processor, "image_processor", None), "merge_size", 2)
        config = config_class(
            vision_config={"spatial_merge_size": merge},
            image_token_id=processor.image_token_id,
            video_token_id=processor.video_token_id,
        )
        return cls(config=config, derived=True)

    def __call__(self, sample: Mapping[str, Any]) -> torch.Tensor:
        """``[3, n]`` positions of one sample (1-D ``input_ids`` and ``mm_token_type_ids``)."""
        grids = {key: sample.get(key) for key in ("image_grid_thw", "video_grid_thw")}
        if grids["video_grid_thw"] is not None and self.derived and self._uses_video_timing():
            msg = (
                "videos in a padding-free batch need the checkpoint's config for their temporal "
                "positions: pass rope_index=MRopeIndex.from_config(AutoConfig.from_pretrained(p))."
            )
            raise ConfigurationError(msg)
        input_ids = torch.as_tensor(sample["input_ids"]).reshape(1, -1)
        types = sample.get("mm_token_type_ids")
        types = self._token_types(input_ids) if types is None else torch.as_tensor(types)
        if grids["image_grid_thw"] is None and grids["video_grid_thw"] is None:
            return torch.arange(input_ids.shape[1]).expand(3, -1).clone()
        positions, _ = self._model.get_rope_index(
            input_ids,
            mm_token_type_ids=types.reshape(1, -1),
            second_per_grid_ts=sample.get("second_per_grid_ts"),
            **grids,
        )
        return cast("torch.Tensor", positions[:, 0])

    def _token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text 0, image 1, video 2, read from the placeholder ids when the processor gave none."""
        types = torch.zeros_like(input_ids)
        types[input_ids == self.config.image_token_id] = 1
        types[input_ids == self.config.video_token_id] = 2
        return types

    def _uses_video_timing(self) -> bool:
        return hasattr(getattr(self.config, "vision_config", None), "tokens_per_second")
