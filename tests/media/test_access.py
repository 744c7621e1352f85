"""MediaAccess: the policy itself, URLs against a real local server, roots and references."""

from __future__ import annotations

import base64
import io
import os
import time

import pytest
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import image_sample
from tests.helpers.hostile import RecordingServer
from tests.helpers.media_files import quadrants, write_image
from vlm_collate.errors import ConfigurationError, MediaError, SampleTypeError
from vlm_collate.media import MediaAccess, load_image, load_waveform, resolve_media

LOCATION = {"sample_index": 2, "message_index": 1, "item_index": 0}


def png_bytes(width: int = 12, height: int = 10) -> bytes:
    buffer = io.BytesIO()
    quadrants(width, height).save(buffer, format="PNG")
    return buffer.getvalue()


def item_sample(item: dict) -> dict:
    return {
        "conversation": [
            {"role": "user", "content": [item, {"type": "text", "text": "What?"}]},
            {"role": "assistant", "content": "A box."},
        ]
    }


def _serve_png(handler) -> None:
    body = png_bytes()
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _redirect_to(target: str):
    def route(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", target)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def _stall(handler) -> None:
    handler.server.release.wait(30)


def _big_declared(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(10**9))
    handler.end_headers()
    handler.wfile.write(b"\0" * 1000)


def _big_undeclared(handler) -> None:
    handler.send_response(200)
    handler.end_headers()  # no Content-Length: the body runs until the connection closes
    for _ in range(64):
        handler.wfile.write(b"\0" * 4096)


@pytest.fixture
def server():
    routes = {
        "/ok.png": _serve_png,
        "/stall": _stall,
        "/big": _big_declared,
        "/endless": _big_undeclared,
        "/r0": _redirect_to("/ok.png"),
    }
    for hop in range(1, 6):
        routes[f"/r{hop}"] = _redirect_to(f"/r{hop - 1}")
    running = RecordingServer(routes)
    running.routes["/offsite"] = _redirect_to(
        f"http://localhost:{running.server_address[1]}/ok.png"
    )
    yield running
    running.stop()


class TestMediaAccessOptions:
    """MediaAccess: safe defaults, validated options, mappings for config files."""

    def test_safe_defaults(self):
        """URLs are off and every medium is bounded by default."""
        access = MediaAccess()
        assert (False, None, 10.0, 3, 64 * 2**20, 89_478_485, 256, 1920 * 1088, "sample") == (
            access.allow_urls,
            access.roots,
            access.url_timeout,
            access.max_redirects,
            access.max_bytes,
            access.max_image_pixels,
            access.max_video_frames,
            access.max_video_pixels,
            access.video_over_limit,
        )

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"allow_urls": "yes"}, "'allow_urls'"),
            ({"url_timeout": 0}, "'url_timeout'"),
            ({"url_timeout": float("inf")}, "'url_timeout'"),
            ({"max_bytes": -1}, "'max_bytes'"),
            ({"max_redirects": 1.5}, "'max_redirects'"),
            ({"max_image_pixels": True}, "'max_image_pixels'"),
            ({"video_over_limit": "crop"}, "'video_over_limit'"),
            ({"audio_channels": "left"}, "'audio_channels'"),
            ({"max_audio_seconds": float("nan")}, "'max_audio_seconds'"),
            ({"roots": []}, "'roots'"),
            ({"allowed_hosts": "example.org"}, "'allowed_hosts'"),
        ],
    )
    def test_invalid_options_are_configuration_errors(self, options, named):
        """Each invalid option is a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError, match=named):
            MediaAccess(**options)

    def test_collator_takes_a_mapping(self, qwen_processor, tmp_path):
        """A collator's media_access may be a mapping of options, as Hydra or YAML give it."""
        collator = vc.Qwen25VLCollator(
            processor=qwen_processor, media_access={"roots": [str(tmp_path)], "max_bytes": 4096}
        )
        assert MediaAccess(roots=[tmp_path], max_bytes=4096) == collator.media_access

    def test_unknown_option_is_refused(self, qwen_processor):
        """An unknown key in the mapping is a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError, match="allow_url"):
            vc.Qwen25VLCollator(processor=qwen_processor, media_access={"allow_url": True})

    def test_max_image_pixels_and_policy_agree(self, qwen_processor):
        """max_image_pixels given to the collator is the policy's image limit too."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor, max_image_pixels=1000)
        assert (1000, 1000) == (collator.max_image_pixels, collator.media_access.max_image_pixels)

    def test_policy_image_limit_is_used(self, qwen_processor):
        """The policy's max_image_pixels refuses a larger image."""
        collator = vc.Qwen25VLCollator(
            processor=qwen_processor, media_access=MediaAccess(max_image_pixels=100)
        )
        with pytest.raises(MediaError, match="max_image_pixels=100"):
            collator([image_sample("A box.", quadrants(56, 56))])


class TestUrls:
    """URLs against a real local server: no request unless allowed; bounded when allowed."""

    @pytest.mark.parametrize("kind", ["image", "video", "audio"])
    def test_refused_by_default_without_a_request(self, qwen_processor, server, kind):
        """An http URL in any media item is a MediaError naming the item; the server sees nothing."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        sample = item_sample({"type": kind, kind: server.url("/ok.png")})
        with pytest.raises(MediaError, match="URLs are refused by default") as caught:
            collator([image_sample("A box.", quadrants(28, 28)), sample])
        where = (caught.value.sample_index, caught.value.message_index, caught.value.item_index)
        assert ((1, 0, 0), []) == (where, server.requests)

    def test_fetched_when_allowed(self, qwen_processor, server):
        """With allow_urls the image is fetched once, by our reader, and collated."""
        collator = vc.Qwen25VLCollator(
            processor=qwen_processor, media_access=MediaAccess(allow_urls=True, url_timeout=5)
        )
        batch = collator([item_sample({"type": "image", "image": server.url("/ok.png")})])
        assert (["/ok.png"], 1) == (server.requests, int(batch["n_images_per_sample"][0]))

    def test_stalled_server_times_out(self, server):
        """A server that never answers is a MediaError once url_timeout has passed."""
        access = MediaAccess(allow_urls=True, url_timeout=0.5)
        start = time.monotonic()
        with pytest.raises(MediaError, match="url_timeout=0.5"):
            load_image(server.url("/stall"), access=access, location=LOCATION)
        assert True == (time.monotonic() - start < 3)  # noqa: E712

    def test_redirects_are_bounded(self, server):
        """A chain longer than max_redirects is refused after max_redirects + 1 requests."""
        access = MediaAccess(allow_urls=True, url_timeout=5, max_redirects=2)
        with pytest.raises(MediaError, match="max_redirects=2"):
            load_image(server.url("/r5"), access=access, location=LOCATION)
        assert ["/r5", "/r4", "/r3"] == server.requests

    def test_short_redirect_chain_is_followed(self, server):
        """A chain within max_redirects ends at the image."""
        access = MediaAccess(allow_urls=True, url_timeout=5, max_redirects=2)
        image = load_image(server.url("/r1"), access=access, location=LOCATION)
        assert ((12, 10), ["/r1", "/r0", "/ok.png"]) == (image.size, server.requests)

    def test_redirect_to_another_host_is_refused(self, server):
        """allowed_hosts is checked on every hop: a redirect elsewhere is refused, not requested."""
        access = MediaAccess(allow_urls=True, url_timeout=5, allowed_hosts=["127.0.0.1"])
        with pytest.raises(MediaError, match="'localhost', which is not in allowed_hosts"):
            load_image(server.url("/offsite"), access=access, location=LOCATION)
        assert ["/offsite"] == server.requests

    @pytest.mark.parametrize("path", ["/big", "/endless"])
    def test_oversize_body_is_refused(self, server, path):
        """A body over max_bytes (declared or not) is a MediaError."""
        access = MediaAccess(allow_urls=True, url_timeout=5, max_bytes=10_000)
        with pytest.raises(MediaError, match="max_bytes=10000"):
            load_image(server.url(path), access=access, location=LOCATION)

    def test_error_status_is_a_media_error(self, server):
        """A 404 is a MediaError naming the status."""
        access = MediaAccess(allow_urls=True, url_timeout=5)
        with pytest.raises(MediaError, match="HTTP 404"):
            load_image(server.url("/missing.png"), access=access, location=LOCATION)

    @pytest.mark.parametrize("url", ["tcp://127.0.0.1:9/x", "rtsp://127.0.0.1/x", "gopher://x/"])
    def test_other_schemes_are_refused_for_audio(self, url):
        """Audio references with network schemes other than http(s)/ftp are refused outright."""
        with pytest.raises(MediaError, match="uses the scheme"):
            load_waveform(url, sampling_rate=16000, location=LOCATION)


class TestRoots:
    """roots: relative paths resolve against the first root; nothing outside is read."""

    @pytest.fixture
    def layout(self, tmp_path):
        root, outside = tmp_path / "data", tmp_path / "elsewhere"
        root.mkdir()
        outside.mkdir()
        write_image(root / "in.png", quadrants(12, 10))
        write_image(outside / "secret.png", quadrants(12, 10))
        os.symlink(outside / "secret.png", root / "link.png")
        os.symlink(root / "in.png", root / "alias.png")
        return root, outside

    def test_relative_path_resolves_against_the_first_root(self, layout):
        """'in.png' is read from the first root."""
        root, _ = layout
        access = MediaAccess(roots=[root])
        assert (12, 10) == load_image("in.png", access=access, location=LOCATION).size

    @pytest.mark.parametrize("name", ["../elsewhere/secret.png", "link.png"])
    def test_escapes_are_refused(self, layout, name):
        """'..' paths and symlinks leading outside every root are refused."""
        root, _ = layout
        with pytest.raises(MediaError, match="outside the roots"):
            load_image(name, access=MediaAccess(roots=[root]), location=LOCATION)

    def test_absolute_path_outside_is_refused(self, layout):
        """An absolute path outside the roots is refused."""
        root, outside = layout
        with pytest.raises(MediaError, match="outside the roots"):
            load_image(
                str(outside / "secret.png"), access=MediaAccess(roots=[root]), location=LOCATION
            )

    def test_symlink_inside_is_read(self, layout):
        """A symlink whose target lies inside a root is read."""
        root, _ = layout
        access = MediaAccess(roots=[root])
        assert (12, 10) == load_image("alias.png", access=access, location=LOCATION).size

    def test_second_root_allows_absolute_paths(self, layout):
        """A file in any of the roots is read when named absolutely."""
        root, outside = layout
        access = MediaAccess(roots=[root, outside])
        image = load_image(str(outside / "secret.png"), access=access, location=LOCATION)
        assert (12, 10) == image.size

    def test_video_and_audio_paths_are_confined(self, layout, qwen_processor):
        """Video and audio references obey roots as well, before any decoder opens them."""
        root, outside = layout
        collator = vc.Qwen25VLCollator(processor=qwen_processor, media_access={"roots": [root]})
        for kind in ("video", "audio"):
            sample = item_sample({"type": kind, kind: str(outside / "secret.png")})
            with pytest.raises(MediaError, match="outside the roots"):
                collator([sample])


class TestReferences:
    """Odd references are typed errors, never bare OSError or a blocked read."""

    def test_overlong_path(self):
        """A path longer than the file system allows is a MediaError saying so."""
        with pytest.raises(MediaError, match="too long"):
            load_image("x/" * 3000 + "a.png", location=LOCATION)

    def test_raw_base64_string(self):
        """A raw base64 string is refused with a hint to use a data: URI or bytes."""
        text = base64.b64encode(png_bytes()).decode()
        with pytest.raises(MediaError, match="use a data: URI or bytes"):
            load_image(text, location=LOCATION)

    def test_directory(self, tmp_path):
        """A directory is a MediaError, not an IsADirectoryError."""
        with pytest.raises(MediaError, match="is a directory"):
            load_image(str(tmp_path), location=LOCATION)

    @pytest.mark.parametrize("kind", ["image", "video", "audio"])
    def test_fifo_is_never_opened(self, tmp_path, kind):
        """A FIFO is refused from its stat, so nothing blocks waiting for a writer."""
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        start = time.monotonic()
        with pytest.raises(MediaError, match="not a regular file"):
            resolve_media(str(fifo), kind=kind, location=LOCATION)
        assert True == (time.monotonic() - start < 1)  # noqa: E712

    def test_device(self):
        """A device file is refused."""
        with pytest.raises(MediaError, match="not a regular file"):
            load_waveform("/dev/zero", sampling_rate=16000, location=LOCATION)

    def test_nul_in_path(self):
        """A NUL character is a MediaError (os functions would raise ValueError)."""
        with pytest.raises(MediaError, match="NUL"):
            load_image("a\x00.png", location=LOCATION)

    def test_bytes_and_mapping_are_read(self):
        """Bytes and {"bytes"} mappings go through the same reader as files."""
        data = png_bytes()
        sizes = [load_image(value, location=LOCATION).size for value in (data, {"bytes": data})]
        assert [(12, 10), (12, 10)] == sizes

    def test_bytes_over_max_bytes(self):
        """A blob over max_bytes is refused before decoding."""
        with pytest.raises(MediaError, match="max_bytes=100"):
            load_image(png_bytes(64, 64), access=MediaAccess(max_bytes=100), location=LOCATION)

    def test_file_over_max_bytes(self, tmp_path):
        """An image file over max_bytes is refused."""
        path = write_image(tmp_path / "a.png", quadrants(64, 64))
        with pytest.raises(MediaError, match="max_bytes=100"):
            load_image(str(path), access=MediaAccess(max_bytes=100), location=LOCATION)

    def test_data_uri_over_max_bytes_is_refused_before_decoding(self):
        """A data: URI whose payload is over max_bytes is refused from its length."""
        uri = "data:image/png;base64," + "A" * 4000
        with pytest.raises(MediaError, match="max_bytes=100"):
            load_image(uri, access=MediaAccess(max_bytes=100), location=LOCATION)

    def test_invalid_base64_in_data_uri(self):
        """A data: URI with broken base64 is a MediaError."""
        with pytest.raises(MediaError, match="base64 payload is invalid"):
            load_image("data:image/png;base64,@@@", location=LOCATION)

    def test_wrong_type(self):
        """A reference of no known type is a SampleTypeError naming the type."""
        with pytest.raises(SampleTypeError, match="float"):
            resolve_media(2.5, kind="video", location=LOCATION)

    def test_pil_global_untouched(self, qwen_processor, tmp_path):
        """A collator with max_image_pixels=10**12 leaves Pillow's own bomb guard as it was."""
        before = Image.MAX_IMAGE_PIXELS
        path = write_image(tmp_path / "a.png", quadrants(56, 56))
        collator = vc.Qwen25VLCollator(processor=qwen_processor, max_image_pixels=10**12)
        collator([item_sample({"type": "image", "image": str(path)})])
        assert before == Image.MAX_IMAGE_PIXELS


class TestPretokenize:
    """pretokenize applies media_access as the collator would."""

    def dataset(self):
        datasets = pytest.importorskip("datasets", reason="needs the 'datasets' package")
        user = [
            {"type": "image", "image": "red.png", "text": None},
            {"type": "text", "text": "Colour?", "image": None},
        ]
        answer = [{"type": "text", "text": "Red.", "image": None}]
        conversation = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return datasets.Dataset.from_list([{"conversation": conversation}])

    def test_roots_resolve_relative_paths(self, qwen_processor, tmp_path):
        """With roots given to pretokenize, a relative image path is read from the root."""
        from vlm_collate.pretokenized import pretokenize

        write_image(tmp_path / "red.png", quadrants(56, 56))
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        stored = pretokenize(self.dataset(), collator, media_access={"roots": [str(tmp_path)]})
        assert [0] == stored.source_indices

    def test_policy_refuses_outside_the_roots(self, qwen_processor, tmp_path):
        """The same row under roots that do not hold the file is a MediaError naming the row."""
        from vlm_collate.pretokenized import pretokenize

        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        access = MediaAccess(roots=[tmp_path])
        with pytest.raises(MediaError, match="^sample 0, message 0, item 0: image file 'red.png'"):
            pretokenize(self.dataset(), collator, media_access=access)


FAMILY_PROCESSORS = (
    "qwen3_omni",
    "nemotron_omni",
    "phi4_mm",
    "kimi_k25",
    "llava_onevision",
    "gemma4",
)


@pytest.fixture(scope="module")
def family_collators():
    from vlm_collate.testing import build_processor

    return {name: vc.collator_for(build_processor(name)) for name in FAMILY_PROCESSORS}


class TestEveryFamily:
    """Every family's collator applies the policy before its own media readers run."""

    @pytest.mark.parametrize("name", FAMILY_PROCESSORS)
    @pytest.mark.parametrize("kind", ["image", "video", "audio"])
    def test_url_refused_without_a_request(self, family_collators, server, name, kind):
        """A URL in any media item is a MediaError naming the item; the server sees nothing."""
        sample = item_sample({"type": kind, kind: server.url("/ok.png")})
        with pytest.raises(MediaError, match="URLs are refused by default") as caught:
            family_collators[name]([sample])
        where = (caught.value.sample_index, caught.value.message_index, caught.value.item_index)
        assert ((0, 0, 0), []) == (where, server.requests)

    @pytest.mark.parametrize("name", ["phi4_mm", "nemotron_omni"])
    def test_top_level_audio_follows_the_policy(self, family_collators, server, name):
        """The seed's example['audio'] is read under the collator's policy too."""
        sample = {**item_sample({"type": "text", "text": "Hi"}), "audio": server.url("/a.wav")}
        with pytest.raises(MediaError, match="URLs are refused by default"):
            family_collators[name]([sample])
        assert [] == server.requests

    @pytest.mark.parametrize("name", ["phi4_mm", "nemotron_omni"])
    def test_top_level_audio_fifo(self, family_collators, tmp_path, name):
        """A FIFO as example['audio'] is refused without being opened."""
        os.mkfifo(tmp_path / "pipe.wav")
        sample = {
            **item_sample({"type": "text", "text": "Hi"}),
            "audio": str(tmp_path / "pipe.wav"),
        }
        with pytest.raises(MediaError, match="not a regular file"):
            family_collators[name]([sample])
