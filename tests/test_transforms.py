from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vlalign.data.collate import make_collate
from vlalign.data.transforms import Letterbox, ResizeSquare, identity_params, invert_prediction


def _scene(h: int, w: int) -> tuple[Image.Image, np.ndarray]:
    """An image and a mask (ellipse + bar) of size HxW."""
    yy, xx = np.mgrid[:h, :w]
    mask = (((yy - 0.45 * h) / (0.3 * h)) ** 2 + ((xx - 0.4 * w) / (0.25 * w)) ** 2 <= 1).astype(np.uint8)
    mask[int(0.8 * h) : int(0.9 * h), int(0.1 * w) : int(0.9 * w)] = 1
    pixels = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels), mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("transform", [ResizeSquare(192), Letterbox(192)], ids=repr)
@pytest.mark.parametrize("h,w", [(333, 517), (517, 333)])
def test_forward_then_invert_recovers_mask(transform, h, w):
    image, mask = _scene(h, w)
    image_t, mask_t, params = transform(image, mask)
    assert image_t.shape == (3, 192, 192) and image_t.dtype == torch.float32
    assert 0.0 <= float(image_t.min()) and float(image_t.max()) <= 1.0
    assert mask_t.shape == (192, 192) and mask_t.dtype == torch.float32
    assert set(mask_t.unique().tolist()) == {0.0, 1.0}
    back = transform.invert(mask_t, params)
    assert back.shape == (h, w)
    recovered = (back > 0.5).numpy().astype(np.uint8)
    assert _iou(recovered, mask) > 0.97  # 0.98-0.985 measured; errors are edge quantisation
    # the module-level dispatcher gives the same answer from params alone
    torch.testing.assert_close(invert_prediction(mask_t, params), back)


@pytest.mark.parametrize("transform", [ResizeSquare(32), Letterbox(32)], ids=repr)
def test_params_are_plain_python_and_pickle(transform):
    image, mask = _scene(21, 45)
    _, _, params = transform(image, mask)
    assert all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in params.values())
    assert pickle.loads(pickle.dumps(params)) == params
    assert (params["height"], params["width"]) == (21, 45)


def test_letterbox_geometry_and_padding():
    image, mask = _scene(30, 60)
    box = Letterbox(40, fill=(1, 2, 3))
    image_t, mask_t, p = box(image, mask)
    assert (p["new_height"], p["new_width"], p["pad_top"], p["pad_left"]) == (20, 40, 10, 0)
    # padded rows: image = fill, mask = background
    expected_fill = torch.tensor([1.0, 2.0, 3.0]) / 255
    torch.testing.assert_close(image_t[:, :10, :], expected_fill[:, None, None].expand(3, 10, 40))
    torch.testing.assert_close(image_t[:, 30:, :], expected_fill[:, None, None].expand(3, 10, 40))
    assert mask_t[:10].sum() == 0 and mask_t[30:].sum() == 0 and mask_t[10:30].sum() > 0


def test_letterbox_invert_crops_padding_exactly():
    # a prediction of 1 on the content and 0 on the padding must map back to all ones (no border bleed)
    _, _, p = Letterbox(40)(*_scene(30, 60))
    pred = torch.zeros(40, 40)
    pred[10:30, :] = 1.0
    back = Letterbox.invert(pred, p)
    assert back.shape == (30, 60)
    torch.testing.assert_close(back, torch.ones(30, 60))


def test_invert_is_identity_when_no_resize_is_needed():
    image, mask = _scene(48, 48)
    for transform in (ResizeSquare(48), Letterbox(48)):
        _, mask_t, params = transform(image, mask)
        np.testing.assert_array_equal(mask_t.numpy(), mask)
        logits = torch.randn(48, 48)
        torch.testing.assert_close(transform.invert(logits, params), logits)


def test_invert_keeps_leading_dims_and_accepts_bool():
    image, mask = _scene(25, 37)
    _, mask_t, params = ResizeSquare(16)(image, mask)
    batch = torch.stack([mask_t, 1 - mask_t]).reshape(2, 1, 16, 16)
    back = ResizeSquare.invert(batch, params)
    assert back.shape == (2, 1, 25, 37)
    torch.testing.assert_close(back[0, 0] + back[1, 0], torch.ones(25, 37))  # bilinear is linear
    assert ResizeSquare.invert(mask_t.bool(), params).dtype == torch.float32


def test_invert_errors():
    _, _, params = ResizeSquare(16)(*_scene(20, 30))
    with pytest.raises(ValueError, match=r"expected \.\.\.x16x16"):
        ResizeSquare.invert(torch.zeros(8, 8), params)
    with pytest.raises(ValueError, match="kind 'nope'"):
        invert_prediction(torch.zeros(16, 16), {"kind": "nope"})
    identity = identity_params(20, 30)
    assert invert_prediction(torch.ones(20, 30), identity).shape == (20, 30)
    with pytest.raises(ValueError, match=r"expected \.\.\.x20x30"):
        invert_prediction(torch.ones(16, 16), identity)


def test_transform_argument_errors():
    image, mask = _scene(20, 30)
    with pytest.raises(ValueError, match="positive int"):
        ResizeSquare(0)
    with pytest.raises(ValueError, match="fill"):
        Letterbox(32, fill=(1, 2))
    with pytest.raises(ValueError, match=r"mask has shape \(30, 20\)"):
        ResizeSquare(16)(image, mask.T)
    image_t, mask_t, _ = Letterbox(16)(image, None)
    assert image_t.shape == (3, 16, 16) and mask_t is None


def _samples(sizes):
    out = []
    for k, (h, w) in enumerate(sizes):
        image, mask = _scene(h, w)
        image_t, mask_t, params = Letterbox(24)(image, mask)
        out.append({"image": image_t, "mask": mask_t, "text": f"thing {k}", "sent_id": k, "ref_id": 10 + k,
                    "image_id": 7, "orig_size": (h, w), "transform": params, "orig_mask": mask})  # fmt: skip
    return out


def test_collate_stacks_tensors_and_keeps_lists():
    samples = _samples([(20, 30), (31, 17), (24, 24)])
    batch = make_collate()(samples)
    assert batch["image"].shape == (3, 3, 24, 24) and batch["mask"].shape == (3, 24, 24)
    assert batch["text"] == ["thing 0", "thing 1", "thing 2"]
    assert batch["sent_id"] == [0, 1, 2] and batch["orig_size"] == [(20, 30), (31, 17), (24, 24)]
    assert isinstance(batch["transform"], list) and batch["transform"][1] == samples[1]["transform"]
    assert [m.shape for m in batch["orig_mask"]] == [(20, 30), (31, 17), (24, 24)]
    # params taken from the batch still invert each prediction to its own original size
    back = invert_prediction(batch["mask"][1], batch["transform"][1])
    assert back.shape == (31, 17)
    # tensors of different shapes (no transform) stay a list
    ragged = make_collate()([{"image": torch.zeros(3, 5, 6)}, {"image": torch.zeros(3, 7, 6)}])
    assert isinstance(ragged["image"], list)


def test_collate_tokenize():
    def tokenize(texts):
        length = max(len(t.split()) for t in texts)
        tokens = torch.zeros(len(texts), length, dtype=torch.int32)
        mask = torch.zeros(len(texts), length, dtype=torch.uint8)
        for i, t in enumerate(texts):
            tokens[i, : len(t.split())] = torch.arange(1, len(t.split()) + 1)
            mask[i, : len(t.split())] = 1
        return {"tokens": tokens, "token_mask": mask}

    batch = make_collate(tokenize)(_samples([(20, 30), (31, 17)]))
    assert batch["tokens"].dtype == torch.long and batch["token_mask"].dtype == torch.bool
    assert batch["tokens"].shape == (2, 2) and batch["token_mask"].all()
    with pytest.raises(ValueError, match="'tokens'"):
        make_collate(lambda texts: {"token_mask": torch.ones(len(texts), 3)})(_samples([(20, 30)]))


def test_collate_errors_and_pickles():
    with pytest.raises(ValueError, match="empty"):
        make_collate()([])
    with pytest.raises(ValueError, match="sample 1 has keys"):
        make_collate()([{"a": 1}, {"b": 2}])
    collate = pickle.loads(pickle.dumps(make_collate()))  # spawned data-loader workers pickle it
    assert collate([{"a": torch.ones(2)}, {"a": torch.ones(2)}])["a"].shape == (2, 2)
