"""Rendering: deterministic PNG bytes, the paper's normalizations, top-k masks, joint scales."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from explainers import render


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _image(h: int = 16, w: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_jet_endpoints_and_middle_match_the_jet_table():
    colors = render.jet_colormap(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(colors[0], [0.0, 0.0, 0.5])
    np.testing.assert_allclose(colors[2], [0.5, 0.0, 0.0])
    assert colors[1][1] == pytest.approx(1.0)  # the middle of jet is green-dominant


def test_same_input_gives_byte_identical_png_without_metadata_chunks():
    image, cam = _image(), torch.rand(4, 5, generator=torch.Generator().manual_seed(1))
    first = render.render_cam_overlay(image, cam)
    assert first == render.render_cam_overlay(image.clone(), cam.clone())
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    for chunk in (b"tIME", b"tEXt", b"iTXt", b"zTXt"):
        assert chunk not in first
    assert _decode(first).shape == (16, 20, 3)  # the low-resolution CAM is upsampled to the image


def test_cam_overlay_full_alpha_shows_the_colormap_scaled_by_vmax():
    image = torch.zeros(3, 2, 2)
    cam = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    pixels = _decode(render.render_cam_overlay(image, cam, alpha=1.0))
    np.testing.assert_array_equal(pixels[1, 1], [128, 0, 0])  # the maximum is jet(1)
    np.testing.assert_array_equal(pixels[0, 0], [0, 0, 128])  # zero is jet(0)
    shared = _decode(render.render_cam_overlay(image, cam, alpha=1.0, vmax=8.0))
    np.testing.assert_array_equal(shared[1, 1], np.rint(render.jet_colormap(0.5) * 255))


def test_cam_overlay_alpha_zero_is_the_image():
    image = _image()
    pixels = _decode(render.render_cam_overlay(image, torch.rand(16, 20), alpha=0.0))
    np.testing.assert_array_equal(pixels, np.rint(image.permute(1, 2, 0).numpy() * 255))


def test_gray_base_overlay_shows_no_colour_of_the_picture():
    """Under ``base="gray"`` a red object with no heat is grey + jet(0): never redder than green."""
    image = torch.zeros(3, 8, 8)
    image[0] = 0.9  # a saturated red picture
    image[1:, :, :4] = 0.2
    cam = torch.zeros(8, 8)
    gray = _decode(render.render_cam_overlay(image, cam, base="gray")).astype(int)
    assert (gray[..., 0] == gray[..., 1]).all()  # luminance + jet(0) = (l, l, l + blue)
    assert (gray[..., 2] > gray[..., 0]).all()
    colour = _decode(render.render_cam_overlay(image, cam, base="color")).astype(int)
    assert (colour[..., 0] > colour[..., 1]).any()  # the paper's look keeps the red
    np.testing.assert_allclose(render.grayscale(image)[0, 0], [0.9 * 0.299 + 0.2 * 0.701] * 3)
    with pytest.raises(ValueError, match="base"):
        render.render_cam_overlay(image, cam, base="sepia")


@pytest.mark.parametrize("kind", render.KEY_KINDS)
def test_colour_key_is_the_rendering_applied_to_a_ramp(kind):
    pixels = render.colour_key_pixels(kind)
    assert pixels.shape == (render.KEY_HEIGHT, render.KEY_WIDTH, 3)
    assert np.array_equal(pixels, render.colour_key_pixels(kind))  # deterministic
    assert render.colour_key_png(kind) == render.png_bytes(pixels)
    left, right = pixels[:, :4].astype(int), pixels[:, -4:].astype(int)
    if kind == "overlay":  # grey + jet: blue for nothing, red for most
        assert (left[..., 2] > left[..., 0]).all()
        assert (right[..., 0] > right[..., 2]).all()
        expected = np.rint((0.5 * 0.5 + 0.5 * render.jet_colormap(np.array([0.0, 1.0]))) * 255)
        np.testing.assert_array_equal(pixels[0, [0, -1]], expected)
    else:  # plain grey for nothing, far from grey for most
        assert np.abs(left - 128).max() <= 2
        assert np.abs(right - 128).mean() > 25
    key = render.colour_key(kind)
    assert key.kind == kind
    assert all((key.low, key.high, key.description))
    with pytest.raises(ValueError, match="kind"):
        render.colour_key("rainbow")


def test_gradient_color_centres_zero_on_gray_and_keeps_the_sign():
    attr = torch.zeros(3, 4, 4)
    attr[0, 0, 0], attr[1, 1, 1] = 1.0, -1.0
    pixels = _decode(render.render_gradient(attr, style="color", scale=1.0))
    assert pixels[2, 2].tolist() == [128, 128, 128]
    assert pixels[0, 0, 0] == 255
    assert pixels[1, 1, 1] == 0
    assert _decode(render.render_gradient(torch.zeros(3, 4, 4), style="color")).tolist() == [[[128] * 3] * 4] * 4


def test_gradient_percentile_clipping_saturates_outliers():
    attr = torch.full((3, 10, 10), 0.1)
    attr[:, 0, 0] = 100.0  # one outlier must not darken the rest
    pixels = _decode(render.render_gradient(attr, style="color", percentile=95.0))
    assert pixels[5, 5, 0] == 255
    assert pixels[0, 0, 0] == 255
    unclipped = _decode(render.render_gradient(attr, style="color", percentile=100.0))
    assert unclipped[5, 5, 0] == 128


def test_gradient_gray_is_abs_max_over_channels():
    attr = torch.zeros(3, 2, 2)
    attr[0, 0, 0], attr[2, 0, 0], attr[1, 1, 1] = 0.25, -1.0, 0.5
    pixels = _decode(render.render_gradient(attr, style="gray", scale=1.0))
    assert pixels.shape == (2, 2)
    assert pixels.tolist() == [[255, 0], [0, 128]]
    np.testing.assert_array_equal(render.gradient_magnitude(attr), [[1.0, 0.0], [0.0, 0.5]])


def test_joint_scale_puts_maps_on_one_scale():
    weak, strong = torch.full((3, 2, 2), 0.5), torch.full((3, 2, 2), 1.0)
    assert render.joint_scale([weak, strong], percentile=100.0) == pytest.approx(1.0)
    scale = render.joint_scale([weak, strong])
    alone = _decode(render.render_gradient(weak, style="color"))
    together = _decode(render.render_gradient(weak, style="color", scale=scale))
    assert alone[0, 0, 0] == 255
    assert together[0, 0, 0] == 191
    assert render.joint_scale([torch.zeros(2, 2)]) == 0.0


def test_topk_mask_keeps_exactly_the_top_pixels():
    image = torch.ones(3, 4, 4)
    saliency = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    pixels = _decode(render.render_topk_mask(image, saliency, percent=25.0))
    kept = (pixels == 255).all(axis=2)
    assert kept.sum() == 4
    assert kept[3].all()  # the four largest values are the last row
    assert (pixels[~kept] == 128).all()


def test_topk_mask_breaks_ties_deterministically():
    image, saliency = _image(8, 8), torch.zeros(8, 8)
    first = render.render_topk_mask(image, saliency, percent=10.0)
    assert first == render.render_topk_mask(image, saliency, percent=10.0)
    assert (_decode(first) != 128).any(axis=2).sum() >= 1


def test_compose_side_by_side_concatenates_with_gap():
    left = render.render_gradient(torch.randn(3, 10, 6), style="gray")
    right = _image(8, 5)
    pixels = _decode(render.compose_side_by_side([left, right], gap=3))
    assert pixels.shape == (10, 6 + 3 + 5, 3)
    assert (pixels[:, 6:9] == 255).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: render.render_cam_overlay(torch.rand(2, 4, 4), torch.rand(4, 4)), "image"),
        (lambda: render.render_cam_overlay(torch.rand(3, 4, 4) * 2, torch.rand(4, 4)), r"\[0, 1\]"),
        (lambda: render.render_cam_overlay(torch.rand(3, 4, 4), torch.rand(2, 4, 4)), "cam"),
        (lambda: render.render_gradient(torch.rand(3, 4, 4), style="heat"), "style"),
        (lambda: render.render_gradient(torch.rand(3, 4, 4), scale=0.0), "scale"),
        (lambda: render.render_topk_mask(torch.rand(3, 4, 4), torch.rand(4, 4), percent=120), "percent"),
        (lambda: render.render_gradient(torch.full((3, 2, 2), float("nan"))), "non-finite"),
    ],
)
def test_bad_input_is_rejected_with_a_named_reason(call, message):
    with pytest.raises(ValueError, match=message):
        call()
