"""Role checks: a role nobody knows is said out loud, not rendered and left untrained.

Chat templates write turns of ``system``, ``user``, ``assistant`` and ``tool``
messages (ChatML templates write *any* role string as a turn header), and the
label policy trains the roles it names. A message whose role is neither,
such as ShareGPT's ``gpt`` or a misspelled ``usr``, would be rendered as a
turn that nothing trains; [`role_problem`][vlm_collate.formats.role_problem] applies the collator's
``unknown_roles`` policy to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from ..errors import SampleError

__all__ = ["STANDARD_ROLES", "UnknownRolesPolicy", "empty_labels_hint", "role_problem"]

STANDARD_ROLES = ("system", "user", "assistant", "tool")
UnknownRolesPolicy = Literal["raise", "warn", "drop", "allow"]

logger = logging.getLogger("vlm_collate")

_SHAREGPT_ROLES = frozenset({"human", "gpt", "function_call", "observation"})


def _expected(trained: Iterable[str]) -> list[str]:
    extra = sorted(set(trained) - set(STANDARD_ROLES))
    return [*STANDARD_ROLES, *extra]


def _found(conversation: Sequence[Mapping[str, Any]]) -> list[str]:
    """Distinct roles of the conversation, in order of first appearance."""
    return list(dict.fromkeys(str(message.get("role")) for message in conversation))


def _hint(unknown: str, found: Sequence[str], expected: Sequence[str]) -> str:
    if set(found) & _SHAREGPT_ROLES:
        return "pass format='sharegpt' to read ShareGPT/LLaVA rows"
    lowered = unknown.strip().lower()
    if lowered in expected:
        return f"role names are case-sensitive: use {lowered!r}"
    return "rename it, or set unknown_roles='warn' (or 'allow') to keep such samples"


def unknown_role_detail(
    conversation: Sequence[Mapping[str, Any]], trained: Iterable[str]
) -> tuple[int, str] | None:
    """``(message_index, sentence)`` for the first message whose role nobody knows."""
    expected = _expected(trained)
    for position, message in enumerate(conversation):
        role = message.get("role")
        if role in expected:
            continue
        found = _found(conversation)
        detail = (
            f"role {role!r} is not a role the chat template or the label policy knows, so its "
            f"turn would be rendered and never trained (roles found: {', '.join(found)}; "
            f"expected: {', '.join(expected)}); {_hint(str(role), found, expected)}"
        )
        return position, detail
    return None


def role_problem(collator: Any, sample: Any, report: Any) -> Any:
    """Apply ``collator.unknown_roles`` to ``sample``: a DroppedSample to drop, or None.

    ``"raise"`` raises a [`SampleError`][vlm_collate.SampleError], ``"warn"`` adds a
    warning to ``report`` and logs it, ``"allow"`` says nothing.
    """
    policy = getattr(collator, "unknown_roles", "raise")
    if policy == "allow":
        return None
    found = unknown_role_detail(sample.conversation, collator.label_policy.roles)
    if found is None:
        return None
    position, detail = found
    if policy == "raise":
        raise SampleError(detail, sample_index=sample.index, message_index=position)
    from .. import DroppedSample, SampleWarning  # the public names: no cycle at import time

    if policy == "drop":
        return DroppedSample(sample.index, "unknown_role", f"message {position}: {detail}")
    warning = SampleWarning(sample.index, "unknown_role", f"message {position}: {detail}")
    if warning not in report.warnings:
        report.warnings.append(warning)
        logger.warning("%s", warning)
    return None


def empty_labels_hint(conversation: Sequence[Mapping[str, Any]], trained: Iterable[str]) -> str:
    """Why a sample trains nothing, in terms of its data: the roles found and expected."""
    trained = sorted(trained)
    found = _found(conversation)
    text = f"roles found: {', '.join(found)}; trained: {', '.join(trained)}"
    if set(found) & _SHAREGPT_ROLES:
        text += "; pass format='sharegpt'"
    elif not set(found) & set(trained):
        text += f"; the sample has no {' or '.join(trained)} turn"
    return text
