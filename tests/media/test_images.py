"""Image normalisation: upright 8-bit RGB copies, from every way of giving an image."""

from __future__ import annotations

import base64
import io
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import vlm_collate as vc
from tests.helpers.media_files import (
    EXIF_ORIENTATION,
    QUADRANT_COLOURS,
    quadrants,
    snapshot,
    write_grey16_png,
    write_image,
    write_jpeg_with_orientation,
)
from vlm_collate.errors import MediaError
from vlm_collate.media import DEFAULT_MAX_IMAGE_PIXELS, load_image, to_rgb
from vlm_collate.testing import build_processor

WHITE = (255, 255, 255)
LOCATION = {"sample_index": 0, "message_index": 0, "item_index": 0}
RED, GREEN, BLUE, YELLOW = QUADRANT_COLOURS

# Where each stored quadrant ends up once the EXIF orientation is applied, as
# (top-left, top-right, bottom-left, bottom-right) of the upright image, and
# whether width and height swap. Stored: red, green / blue, yellow.
UPRIGHT_QUADRANTS = {
    1: ((RED, GREEN, BLUE, YELLOW), False),
    2: ((GREEN, RED, YELLOW, BLUE), False),  # mirrored left-right
    3: ((YELLOW, BLUE, GREEN, RED), False),  # rotated 180 degrees
    4: ((BLUE, YELLOW, RED, GREEN), False),  # mirrored top-bottom
    6: ((BLUE, RED, YELLOW, GREEN), True),  # shown rotated 90 degrees clockwise
    8: ((GREEN, YELLOW, RED, BLUE), True),  # shown rotated 90 degrees counter-clockwise
}


@pytest.fixture(scope="module")
def processor():
    return build_processor("qwen2_5_vl")


@attrs.define(kw_only=True)
class ImageRecordingCollator(vc.Qwen25VLCollator):
    """A Qwen collator that records the images given to each processor call."""

    images: list[Any] = attrs.field(factory=list, init=False, eq=False)

    def call_processor(self, samples, **inputs):
        self.images.extend(inputs.get("images", []))
        return super().call_processor(samples, **inputs)


def pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    """Pixels of an image in row-major order."""
    return [tuple(pixel) for pixel in np.asarray(image).reshape(-1, 3).tolist()]


def nearest_colour(pixel: tuple[int, ...]) -> tuple[int, int, int]:
    return min(
        QUADRANT_COLOURS,
        key=lambda colour: sum((a - b) ** 2 for a, b in zip(colour, pixel, strict=True)),
    )


def quadrant_colours(image: Image.Image) -> tuple[tuple[int, int, int], ...]:
    """The colour at the centre of each quadrant, snapped to the nearest quadrant colour."""
    width, height = image.size
    centres = [
        (width // 4, height // 4),
        (3 * width // 4, height // 4),
        (width // 4, 3 * height // 4),
        (3 * width // 4, 3 * height // 4),
    ]
    return tuple(nearest_colour(image.getpixel(centre)) for centre in centres)


def image_sample(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversation": [
            {"role": "user", "content": [item, {"type": "text", "text": "Describe it."}]},
            {"role": "assistant", "content": "A picture."},
        ]
    }


def rgba_with_transparency() -> tuple[Image.Image, list[tuple[int, int, int]]]:
    """A 2 x 2 RGBA image and its expected pixels over white."""
    values = [(0, 0, 0, 0), (10, 20, 30, 255), (255, 0, 0, 128), (0, 0, 255, 0)]
    image = Image.new("RGBA", (2, 2))
    image.putdata(values)
    # Over white: out = colour * a + 255 * (1 - a), per channel.
    expected = [
        tuple(round((c * a + 255 * (255 - a)) / 255) for c in (r, g, b)) for r, g, b, a in values
    ]
    return image, expected


def palette_image(transparent_index: int | None) -> tuple[Image.Image, list[tuple[int, int, int]]]:
    """A 2 x 2 P image using palette entries 0..3, and its expected RGB pixels."""
    palette = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (90, 90, 90)]
    image = Image.new("P", (2, 2))
    image.putpalette([channel for colour in palette for channel in colour])
    image.putdata([0, 1, 2, 3])
    if transparent_index is not None:
        image.info["transparency"] = transparent_index
    expected = [WHITE if index == transparent_index else palette[index] for index in range(4)]
    return image, expected


def mode_cases() -> list[Any]:
    """(image, expected RGB pixels) for every mode that needs converting."""
    rgba, rgba_expected = rgba_with_transparency()
    la = Image.new("LA", (2, 1))
    la.putdata([(100, 0), (100, 255)])
    grey = Image.new("L", (2, 1))
    grey.putdata([0, 77])
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    grey16 = Image.fromarray(np.array([[0, 4096, 12800, 32768, 65535]], dtype=np.uint16))
    opaque_palette, opaque_expected = palette_image(None)
    see_through_palette, see_through_expected = palette_image(2)
    return [
        pytest.param(rgba, rgba_expected, id="RGBA"),
        pytest.param(la, [WHITE, (100, 100, 100)], id="LA"),
        pytest.param(opaque_palette, opaque_expected, id="P"),
        pytest.param(see_through_palette, see_through_expected, id="P-transparency"),
        pytest.param(grey, [(0, 0, 0), (77, 77, 77)], id="L"),
        pytest.param(cmyk, [WHITE, (0, 255, 255), (0, 0, 0)], id="CMYK"),
        # 16-bit greys are scaled to 8 bits (v * 255 / 65535), not clipped at 255.
        pytest.param(grey16, [(v, v, v) for v in (0, 16, 50, 128, 255)], id="I;16"),
    ]


class TestToRgb:
    """vlm_collate.media.to_rgb."""

    @pytest.mark.parametrize(("image", "expected"), mode_cases())
    def test_mode_becomes_rgb(self, image, expected):
        """Each mode becomes 8-bit RGB with the expected pixels; transparency goes over white."""
        converted = to_rgb(image)
        assert ("RGB", image.size, expected) == (converted.mode, converted.size, pixels(converted))

    @pytest.mark.parametrize(("image", "expected"), mode_cases())
    def test_original_is_unchanged(self, image, expected):
        """The conversion works on a copy: the given image keeps its mode, size and pixels."""
        before = snapshot(image)
        converted = to_rgb(image)
        assert (before, False) == (snapshot(image), converted is image)

    def test_grey16_mode(self):
        """The 16-bit test image really is I;16, so the scaling test means what it says."""
        assert "I;16" == mode_cases()[-1].values[0].mode

    def test_rgb_keeps_pixels(self):
        """An RGB image keeps its pixels."""
        image = quadrants(8, 6)
        assert pixels(image) == pixels(to_rgb(image))

    @pytest.mark.parametrize("orientation", sorted(UPRIGHT_QUADRANTS))
    def test_exif_orientation_applied(self, tmp_path, orientation):
        """A JPEG's EXIF orientation is applied: quadrants land where the tag says."""
        path = write_jpeg_with_orientation(tmp_path / "photo.jpg", quadrants(64, 32), orientation)
        with Image.open(path) as opened:
            upright = to_rgb(opened)
            actual = (upright.mode, upright.size, quadrant_colours(upright))
        expected_quadrants, swapped = UPRIGHT_QUADRANTS[orientation]
        expected_size = (32, 64) if swapped else (64, 32)
        assert ("RGB", expected_size, expected_quadrants) == actual

    @pytest.mark.parametrize("orientation", range(2, 9))
    def test_exif_orientation_matches_pillow(self, tmp_path, orientation):
        """Every EXIF orientation gives the same pixels as Pillow's exif_transpose."""
        path = write_jpeg_with_orientation(tmp_path / "photo.jpg", quadrants(40, 24), orientation)
        with Image.open(path) as opened:
            expected = ImageOps.exif_transpose(opened).convert("RGB")
        with Image.open(path) as opened:
            upright = to_rgb(opened)
            actual = (upright.size, upright.tobytes())
        assert (expected.size, expected.tobytes()) == actual

    def test_exif_original_keeps_orientation_tag(self, tmp_path):
        """Applying the orientation does not touch the given image's size or EXIF tag."""
        path = write_jpeg_with_orientation(tmp_path / "photo.jpg", quadrants(64, 32), 6)
        with Image.open(path) as opened:
            opened.load()
            to_rgb(opened)
            assert ((64, 32), 6) == (opened.size, opened.getexif().get(EXIF_ORIENTATION))


class TestLoadImage:
    """vlm_collate.media.load_image: files and paths."""

    def load(self, value: Any) -> Any:
        return load_image(value, max_pixels=DEFAULT_MAX_IMAGE_PIXELS, location=LOCATION)

    @pytest.mark.parametrize(
        "as_value",
        [
            pytest.param(str, id="str"),
            pytest.param(lambda path: path, id="Path"),
            pytest.param(lambda path: f"file://{path}", id="file-url"),
        ],
    )
    def test_path_forms(self, tmp_path, as_value):
        """A str path, a Path and a file:// URL all load the same RGB pixels."""
        image = quadrants(12, 10)
        path = write_image(tmp_path / "pattern.png", image)
        loaded = self.load(as_value(path))
        assert ("RGB", pixels(image)) == (loaded.mode, pixels(loaded))

    def test_grey16_png_file_is_scaled(self, tmp_path):
        """A 16-bit greyscale PNG is scaled to 8 bits: 65535 -> 255, 32768 -> 128, not clipped."""
        path = write_grey16_png(tmp_path / "grey16.png", [[0, 256, 32768, 65535]])
        loaded = self.load(path)
        assert ("RGB", [(0, 0, 0), (1, 1, 1), (128, 128, 128), WHITE]) == (
            loaded.mode,
            pixels(loaded),
        )

    def test_transparent_png_file_over_white(self, tmp_path):
        """A palette PNG with a transparent entry loads with that entry as white."""
        image, expected = palette_image(1)
        path = write_image(tmp_path / "palette.png", image, transparency=1)
        assert expected == pixels(self.load(path))

    def test_rgba_png_file_over_white(self, tmp_path):
        """An RGBA PNG loads with its transparent pixels composited over white."""
        image, expected = rgba_with_transparency()
        path = write_image(tmp_path / "rgba.png", image)
        assert expected == pixels(self.load(path))

    def test_oriented_jpeg_file(self, tmp_path):
        """A JPEG file with EXIF orientation 6 loads upright (width and height swapped)."""
        path = write_jpeg_with_orientation(tmp_path / "photo.jpg", quadrants(64, 32), 6)
        loaded = self.load(path)
        assert ((32, 64), UPRIGHT_QUADRANTS[6][0]) == (loaded.size, quadrant_colours(loaded))

    def test_file_is_closed_after_loading(self, tmp_path):
        """Loading does not keep the file open: the result is usable after the file is gone."""
        image = quadrants(12, 10)
        path = write_image(tmp_path / "gone.png", image)
        loaded = self.load(path)
        path.unlink()
        assert pixels(image) == pixels(loaded)

    @pytest.mark.parametrize("url", ["https://example.com/cat.png", "ftp://example.com/a.jpg"])
    def test_urls_are_refused_by_default(self, url):
        """URLs are refused by the default media access policy (no request is made)."""
        with pytest.raises(MediaError, match="URLs are refused by default"):
            self.load(url)

    def test_data_uri_is_decoded(self):
        """A data: URI is decoded by our reader, like a file."""
        image = quadrants(12, 10)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        assert pixels(image) == pixels(self.load(uri))

    def test_array_passes_through(self):
        """A numpy array is handed on as it is."""
        array = np.zeros((4, 4, 3), dtype=np.uint8)
        assert True == (self.load(array) is array)  # noqa: E712


class TestCollatorImages:
    """Images through a collator: the processor gets upright RGB."""

    def pixel_values(self, collator, image_item: dict[str, Any]) -> torch.Tensor:
        example = image_sample(image_item)
        before = snapshot(example)
        batch = collator([example])
        assert before == snapshot(example)
        return batch["pixel_values"]

    @pytest.mark.parametrize(
        "collator_class", [vc.Qwen25VLCollator, vc.DefaultCollator], ids=lambda c: c.__name__
    )
    @pytest.mark.parametrize(("image", "expected"), mode_cases())
    def test_mode_reaches_processor_as_rgb(self, processor, collator_class, image, expected):
        """An image of each mode gives the same pixel_values as its expected RGB equivalent."""
        collator = collator_class(processor=processor, pixel_dtype=torch.float32)
        reference = Image.new("RGB", image.size)
        reference.putdata(expected)
        # Enlarge both the same way so that the processor sees more than a few pixels.
        side = 56
        actual = self.pixel_values(
            collator, {"type": "image", "image": image.resize((side, side), Image.NEAREST)}
        )
        wanted = self.pixel_values(
            collator, {"type": "image", "image": reference.resize((side, side), Image.NEAREST)}
        )
        assert torch.equal(wanted, actual)

    @pytest.mark.parametrize(("image", "expected"), mode_cases())
    def test_processor_receives_rgb_images(self, processor, image, expected):
        """The images handed to the processor are RGB with the expected pixels."""
        collator = ImageRecordingCollator(processor=processor)
        collator([image_sample({"type": "image", "image": image})])
        received = collator.images[0]
        assert ("RGB", expected) == (received.mode, pixels(received))

    def test_transparent_image_is_not_black(self, processor):
        """A fully transparent black image collates like a white one, not like a black one."""
        collator = vc.Qwen25VLCollator(processor=processor)
        clear = self.pixel_values(
            collator, {"type": "image", "image": Image.new("RGBA", (56, 56), (0, 0, 0, 0))}
        )
        white = self.pixel_values(
            collator, {"type": "image", "image": Image.new("RGB", (56, 56), WHITE)}
        )
        black = self.pixel_values(
            collator, {"type": "image", "image": Image.new("RGB", (56, 56), (0, 0, 0))}
        )
        assert (True, False) == (torch.equal(white, clear), torch.equal(black, clear))

    @pytest.mark.parametrize(
        "collator_class", [vc.Qwen25VLCollator, vc.DefaultCollator], ids=lambda c: c.__name__
    )
    def test_exif_orientation_through_collator(self, processor, collator_class, tmp_path):
        """An EXIF-rotated JPEG is collated upright: grid and pixels match the transposed image."""
        path = write_jpeg_with_orientation(tmp_path / "photo.jpg", quadrants(112, 56), 6)
        with Image.open(path) as opened:
            upright = ImageOps.exif_transpose(opened).convert("RGB")
        collator = collator_class(processor=processor, pixel_dtype=torch.float32)
        batch = collator([image_sample({"type": "image", "image": str(path)})])
        reference = collator([image_sample({"type": "image", "image": upright})])
        # Qwen's grid is (frames, height / 14, width / 14): the upright image is 56 wide, 112 tall.
        assert ([[1, 8, 4]], True) == (
            batch["image_grid_thw"].tolist(),
            torch.equal(reference["pixel_values"], batch["pixel_values"]),
        )

    def test_lazily_opened_image(self, processor, tmp_path):
        """An image opened but not yet loaded is read, converted and handed on as RGB."""
        image, expected = rgba_with_transparency()
        path = write_image(tmp_path / "rgba.png", image)
        collator = ImageRecordingCollator(processor=processor)
        with Image.open(path) as lazy:
            collator([image_sample({"type": "image", "image": lazy})])
            assert ("RGBA", "RGB", expected) == (
                lazy.mode,
                collator.images[0].mode,
                pixels(collator.images[0]),
            )

    def test_opened_oriented_image_is_not_modified(self, processor, tmp_path):
        """A PIL image with an EXIF orientation is collated upright and left as it was."""
        path = write_jpeg_with_orientation(tmp_path / "photo.jpg", quadrants(112, 56), 6)
        with Image.open(path) as opened:
            opened.load()
            collator = ImageRecordingCollator(processor=processor)
            example = image_sample({"type": "image", "image": opened})
            before = snapshot(example)
            collator([example])
            assert (before, (56, 112), UPRIGHT_QUADRANTS[6][0]) == (
                snapshot(example),
                collator.images[0].size,
                quadrant_colours(collator.images[0]),
            )

    @pytest.mark.parametrize(
        "collator_class", [vc.Qwen25VLCollator, vc.DefaultCollator], ids=lambda c: c.__name__
    )
    @pytest.mark.parametrize(
        "item_for",
        [
            pytest.param(lambda path: {"type": "image", "image": str(path)}, id="image-str"),
            pytest.param(lambda path: {"type": "image", "image": path}, id="image-Path"),
            pytest.param(
                lambda path: {"type": "image", "image": f"file://{path}"}, id="image-file-url"
            ),
            pytest.param(lambda path: {"type": "image", "path": str(path)}, id="path-key"),
            pytest.param(lambda path: {"type": "image", "path": path}, id="path-key-Path"),
            pytest.param(
                lambda path: {"type": "image", "url": f"file://{path}"}, id="url-key-file-url"
            ),
        ],
    )
    def test_image_sources(self, processor, collator_class, tmp_path, item_for):
        """str and Path paths, file:// URLs and the 'path'/'url' keys give the image's pixels."""
        image = quadrants(84, 56)
        path = write_image(tmp_path / "pattern.png", image)
        collator = collator_class(processor=processor, pixel_dtype=torch.float32)
        from_file = self.pixel_values(collator, item_for(path))
        from_image = self.pixel_values(collator, {"type": "image", "image": image})
        assert torch.equal(from_image, from_file)

    def test_several_images_in_order(self, processor, tmp_path):
        """Images from paths and PIL objects reach the processor in conversation order."""
        first, second, third = (
            quadrants(28, 28),
            Image.new("L", (28, 28), 9),
            Image.new("RGB", (28, 28), (1, 2, 3)),
        )
        first_path = write_image(tmp_path / "first.png", first)
        examples = [
            image_sample({"type": "image", "path": str(first_path)}),
            {
                "conversation": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "image": second},
                            {"type": "image", "image": third},
                        ],
                    },
                    {"role": "assistant", "content": "Two."},
                ]
            },
        ]
        collator = ImageRecordingCollator(processor=processor)
        batch = collator(examples)
        assert ([pixels(first), [(9, 9, 9)] * 784, [(1, 2, 3)] * 784], [1, 2]) == (
            [pixels(image) for image in collator.images],
            batch["n_images_per_sample"].tolist(),
        )


class TestFileUrls:
    def test_percent_escapes_and_localhost(self, tmp_path):
        """file:// URLs are parsed: percent-escapes decoded, localhost and upper case accepted."""
        from vlm_collate.media import local_path

        target = tmp_path / "a b.png"
        assert target == local_path(f"file://{tmp_path!s}/a%20b.png")
        assert target == local_path(f"file://localhost{tmp_path!s}/a%20b.png")
        assert target == local_path(f"FILE://{tmp_path!s}/a%20b.png")

    def test_remote_detection_ignores_case(self):
        """HTTP(S) URLs in any case are left to the processor."""
        from vlm_collate.media import is_remote

        assert is_remote("HTTPS://example.org/x.png") and not is_remote("/data/https.png")


class TestLastReportOnFailure:
    def test_report_describes_the_failed_batch(self):
        """After a batch in which every sample was dropped, last_report describes that batch."""
        import vlm_collate as vc
        from vlm_collate.testing import build_processor

        collator = vc.Qwen25VLCollator(processor=build_processor("qwen2_5_vl"), empty_labels="drop")
        collator(
            [
                {
                    "conversation": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "content": "b"},
                    ]
                }
            ]
        )
        with pytest.raises(vc.BatchError):
            collator([{"conversation": [{"role": "user", "content": "no answer"}]}] * 2)
        assert 2 == collator.last_report.batch_size
        assert [0, 1] == [dropped.index for dropped in collator.last_report.dropped]


class TestDatasetsForms:
    def test_bytes_mapping_and_none_fields(self):
        """Images as {"bytes", "path"} and items carrying None fields (Arrow rows) collate."""
        import io

        import vlm_collate as vc
        from vlm_collate.testing import build_processor, decoded_label_runs

        buffer = io.BytesIO()
        Image.new("RGB", (56, 56), (255, 0, 0)).save(buffer, format="PNG")
        processor = build_processor("qwen2_5_vl")
        content = [
            {"type": "image", "image": {"bytes": buffer.getvalue(), "path": None}, "text": None},
            {"type": "text", "text": "Hi", "image": None},
        ]
        sample = {
            "conversation": [
                {"role": "user", "content": content},
                {"role": "assistant", "content": "Yo"},
            ]
        }
        batch = vc.Qwen25VLCollator(processor=processor)([sample])
        assert [1] == batch["n_images_per_sample"].tolist()
        assert 1 == batch["image_grid_thw"].shape[0]
        assert [["Yo<|im_end|>"]] == decoded_label_runs(batch["labels"], processor.tokenizer)
