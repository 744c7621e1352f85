"""Labels for Hugging Face ``Trainer`` and TRL: the right convention by name, the wrong one loud.

Collators pre-shift labels by default (``labels[:, t]`` trains the token at
``t + 1``), the convention of NeMo Automodel's training loop. Hugging Face
models shift the labels again inside ``forward``, so a pre-shifted batch there
trains every position on the token after the next one, and nothing fails.
[`hf_trainer_collator`][vlm_collate.hf_trainer_collator] builds the collator
with the unshifted convention; a pre-shifted collator called from inside
``transformers.Trainer`` (which TRL's trainers subclass) warns once with
[`PreShiftedLabelsWarning`][vlm_collate.PreShiftedLabelsWarning].
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import FrameType

from .errors import ConfigurationError
from .registry import collator_for

__all__ = ["PreShiftedLabelsWarning", "hf_trainer_collator", "warn_if_shifted_for_trainer"]

# Trainer's training and evaluation loops live in this module; TRL's trainers
# inherit them, so their frames sit on the stack of every collate call the
# trainer makes (in its own process and in fork-started DataLoader workers).
_TRAINER_MODULE = "transformers.trainer"
_MAX_FRAMES = 200


class PreShiftedLabelsWarning(UserWarning):
    """Pre-shifted labels are being collated for a model that shifts labels itself."""


def hf_trainer_collator(processor: Any, **options: Any) -> Any:
    """The collator for ``processor`` with the labels Hugging Face models expect.

    The same as [`collator_for`][vlm_collate.collator_for] with
    ``shift_labels=False``: ``labels`` line up with ``input_ids`` and the model
    shifts them in ``forward``, as ``Trainer`` and TRL's ``SFTTrainer`` need.

    Args:
        processor: The model's Hugging Face processor.
        **options: Any other collator option (``max_length``, ``label_policy``, ...).
    """
    if options.get("shift_labels", False) is not False:
        msg = (
            "'shift_labels' must be False for a Hugging Face Trainer collator "
            f"(got {options['shift_labels']!r}); the model shifts the labels itself."
        )
        raise ConfigurationError(msg)
    return collator_for(processor, **{**options, "shift_labels": False})


def called_by_trainer() -> bool:
    """Whether a frame of ``transformers.Trainer``'s loops is on the current stack."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return False
        if frame.f_globals.get("__name__") == _TRAINER_MODULE:
            return True
        frame = frame.f_back
    return False


def warn_if_shifted_for_trainer(collator: Any) -> bool:
    """Warn when a pre-shifted ``collator`` is called by a Trainer; returns whether it warned."""
    if not collator.shift_labels or not called_by_trainer():
        return False
    name = type(collator).__name__
    msg = (
        f"{name} pre-shifts labels (shift_labels=True, the default) but is called by a "
        "Hugging Face Trainer, whose models shift labels again: every position would be "
        "trained on the token after the next one. Build it with "
        "vc.hf_trainer_collator(processor) or pass shift_labels=False; if your compute_loss "
        "does not shift, silence this with warnings.filterwarnings('ignore', "
        "category=vc.PreShiftedLabelsWarning)."
    )
    warnings.warn(msg, PreShiftedLabelsWarning, stacklevel=3)
    return True
