"""Pure tensor helpers: padding, truncating, shifting."""

from __future__ import annotations

import torch

from vlm_collate._padding import padded_length, repad, shift_for_next_token, token_axis_keys


class TestRepad:
    def test_right_to_right_longer(self):
        """Right-padded rows are extended with the pad value on the right."""
        tensor = torch.tensor([[1, 2, 0], [3, 0, 0]])
        actual = repad(tensor, [2, 1], 4, side_in="right", side_out="right", pad_value=0)
        assert [[1, 2, 0, 0], [3, 0, 0, 0]] == actual.tolist()

    def test_left_to_right(self):
        """Left-padded rows move to the left edge when padding goes right."""
        tensor = torch.tensor([[0, 1, 2], [0, 0, 3]])
        actual = repad(tensor, [2, 1], 3, side_in="left", side_out="right", pad_value=-1)
        assert [[1, 2, -1], [3, -1, -1]] == actual.tolist()

    def test_truncates_keeping_the_start(self):
        """Rows longer than the target keep their first tokens."""
        tensor = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
        actual = repad(tensor, [4, 2], 3, side_in="right", side_out="right", pad_value=0)
        assert [[1, 2, 3], [5, 6, 0]] == actual.tolist()

    def test_truncates_left_padded_rows_from_their_start(self):
        """Left-padded rows also keep their first real tokens when cut."""
        tensor = torch.tensor([[1, 2, 3, 4], [0, 0, 5, 6]])
        actual = repad(tensor, [4, 2], 3, side_in="left", side_out="left", pad_value=0)
        assert [[1, 2, 3], [0, 5, 6]] == actual.tolist()

    def test_unchanged_input_is_returned_as_is(self):
        """Nothing to do means no copy."""
        tensor = torch.tensor([[1, 2], [3, 0]])
        assert repad(tensor, [2, 1], 2, side_in="right", side_out="right", pad_value=0) is tensor


class TestPaddedLength:
    def test_longest(self):
        """Without options the longest row decides."""
        assert 7 == padded_length(
            7, max_length=None, pad_to_max_length=False, pad_to_multiple_of=None, shift=True
        )

    def test_max_length_padding(self):
        """padding='max_length' pads every batch to max_length."""
        assert 16 == padded_length(
            7, max_length=16, pad_to_max_length=True, pad_to_multiple_of=None, shift=True
        )

    def test_multiple_applies_to_the_shifted_length(self):
        """The length the model sees (one shorter after the shift) is a multiple of N."""
        length = padded_length(
            10, max_length=None, pad_to_max_length=False, pad_to_multiple_of=8, shift=True
        )
        assert 17 == length  # 16 after the shift

    def test_multiple_without_shift(self):
        """Unshifted batches round the row length itself."""
        assert 16 == padded_length(
            10, max_length=None, pad_to_max_length=False, pad_to_multiple_of=8, shift=False
        )


class TestShift:
    def test_labels_drop_first_and_inputs_drop_last(self):
        """labels[:, 1:] and the other token-axis keys [:, :-1]."""
        batch = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([[-100, 2, 3]])}
        shift_for_next_token(batch, ["input_ids", "labels"])
        assert [[1, 2]] == batch["input_ids"].tolist()
        assert [[2, 3]] == batch["labels"].tolist()


class TestTokenAxisKeys:
    def test_media_keys_are_excluded_even_with_matching_shape(self):
        """A media tensor that happens to have input_ids' shape is not a token-axis key."""
        batch = {
            "input_ids": torch.zeros(2, 3),
            "attention_mask": torch.zeros(2, 3),
            "image_grid_thw": torch.zeros(2, 3),
            "pixel_values": torch.zeros(5, 7),
        }
        assert ["input_ids", "attention_mask"] == token_axis_keys(batch, exclude={"image_grid_thw"})
