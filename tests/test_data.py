"""BreastMNIST data module on the real npz, and its errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from breastcls.data.breastmnist import BreastMNISTDataModule, load_breastmnist


def test_official_splits_and_counts(data_dir):
    dm = BreastMNISTDataModule(str(data_dir))
    dm.setup()
    sizes = {s: len(dm.dataset(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 546, "val": 78, "test": 156}
    assert dm.class_counts("train").tolist() == [147, 399]  # malignant, normal+benign
    assert dm.class_counts("test").tolist() == [42, 114]
    batch = next(iter(dm.test_dataloader()))
    x, index = batch["image"], batch["index"]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0  # normalised with mean 0.5, std 0.5
    assert index[:3].tolist() == [0, 1, 2]
    assert batch["sample_id"][:2] == ["test_0", "test_1"]


def test_rgb_channels_match_gray(data_dir):
    gray, rgb = (BreastMNISTDataModule(str(data_dir), as_rgb=a) for a in (False, True))
    xg, xr = gray.dataset("val")[5]["image"], rgb.dataset("val")[5]["image"]
    assert xr.shape == (3, 28, 28) and rgb.input_shape == (3, 28, 28)
    assert torch.equal(xr[0], xg[0]) and torch.equal(xr[2], xg[0])


def test_augmentation_is_seeded_and_only_on_train(data_dir):
    aug = {"hflip": v2.RandomHorizontalFlip(1.0), "rotation": v2.RandomRotation(180)}
    dm = BreastMNISTDataModule(str(data_dir), augmentation=aug)
    plain = BreastMNISTDataModule(str(data_dir))

    def first_batch(seed):
        torch.manual_seed(seed)
        return next(iter(dm.train_dataloader()))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert torch.equal(dm.dataset("val")[0]["image"], plain.dataset("val")[0]["image"])
    eval_view = plain.dataset("train")[3]["image"]
    assert torch.equal(dm.dataset("train")[3]["image"], eval_view)  # eval view
    assert not torch.equal(dm.dataset("train", augment=True)[3]["image"], eval_view)


def test_missing_file_names_path_and_fixes(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        BreastMNISTDataModule(str(tmp_path)).setup()
    message = str(err.value)
    assert str(tmp_path / "breastmnist.npz") in message
    assert "BREASTCLS_DATA_DIR" in message and "data.download=true" in message


def test_missing_larger_size_names_its_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"breastmnist_64\.npz"):
        load_breastmnist(tmp_path, size=64)


def test_corrupt_npz(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match="not a readable npz"):
        load_breastmnist(tmp_path)


def test_npz_with_wrong_shapes(tmp_path):
    arrays = {f"{s}_{k}": np.zeros((4, 32, 32) if k == "images" else (4, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(ValueError, match=r"expected \(N, 28, 28\)"):
        load_breastmnist(tmp_path)


def test_npz_missing_key(tmp_path):
    np.savez(tmp_path / "breastmnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="lacks the array"):
        load_breastmnist(tmp_path)


@pytest.mark.parametrize("size", [32, 0])
def test_unsupported_size(size, tmp_path):
    with pytest.raises(ValueError, match="sizes \\(28, 64, 128, 224\\)"):
        BreastMNISTDataModule(str(tmp_path), size=size)


def test_batches_built_whole_equal_per_image_samples():
    """Without augmentation a loader's batch is gathered and normalised at once: the same values
    as collating the per-image samples; augmentation draws per image."""
    from torch.utils.data import DataLoader

    from breastcls.data.arrays import ArrayDataset, build_transform, collate, deterministic

    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    plain = build_transform(None, [0.4, 0.5, 0.6], [0.2, 0.3, 0.4], 3)
    data = ArrayDataset(images, torch.arange(10) % 2, plain, torch.arange(10) + 100,
                        baselines=images.flip(-1), sample_ids=[f"s{i}" for i in range(10)],
                        groups=[f"g{i // 3}" for i in range(10)])
    whole = next(iter(DataLoader(data, batch_size=4, sampler=[7, 2, 5, 0])))
    expected = collate([data[i] for i in (7, 2, 5, 0)])
    batched = next(iter(DataLoader(data.as_whole_batches(), batch_size=4, collate_fn=collate,
                                   sampler=[7, 2, 5, 0])))
    assert isinstance(data.as_whole_batches().__getitems__([0, 1]), dict)
    assert whole["sample_id"] == expected["sample_id"] and whole["group"] == expected["group"]
    for key in ("image", "baseline", "label", "index"):
        assert torch.equal(whole[key], expected[key]), key
        assert torch.equal(batched[key], expected[key]), key
    assert batched["sample_id"] == expected["sample_id"]
    augmented = data.with_transform(build_transform({"flip": torch.nn.Identity()}, [0.5], [0.5],
                                                    3))
    assert not deterministic(augmented.transform) and deterministic(data.transform)


def test_scale_normalize_equals_torchvision_steps():
    """The fused conversion gives ToDtype(scale) + Normalize's values for 8- and 16-bit images,
    leaves boxes and a float input untouched."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from breastcls.data.arrays import ScaleNormalize, build_transform

    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    fused = build_transform(None, mean, std, 3)
    for dtype, top in ((torch.uint8, 256), (torch.uint16, 65536)):
        images = torch.randint(0, top, (4, 3, 9, 7), dtype=torch.int32).to(dtype)
        torch.testing.assert_close(fused(images), reference(images), rtol=0, atol=1e-6)
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[1.0, 2.0, 5.0, 6.0]]), format="XYXY",
                                     canvas_size=(9, 7))
    out = fused({"image": tv_tensors.Image(images[0].to(torch.uint8)), "boxes": boxes})
    assert isinstance(out["image"], tv_tensors.Image) and out["image"].dtype == torch.float32
    assert torch.equal(out["boxes"], boxes)
    floats = torch.rand(1, 5, 5)
    kept = floats.clone()
    torch.testing.assert_close(ScaleNormalize([0.5], [0.5])(floats), (kept - 0.5) / 0.5)
    assert torch.equal(floats, kept)
