"""The workload registry: every workload builds, trains a step and evaluates; loaders shuffle
deterministically; real-data loaders parse the official formats; fallbacks say why."""

from __future__ import annotations

import gzip
import math
import pickle
import random
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from bench import workloads
from bench.workloads import TensorLoader, Workload, cnn_mnist1d
from bench.workloads import resnet18_cifar100 as cifar
from bench.workloads import transformer_multi30k as mt
from bench.workloads.workload import eval_function

NAMES = [
    "mlp-digits",
    "cnn-mnist1d",
    "cnn-mnist1d-large",
    "resnet18-cifar100",
    "transformer-multi30k",
]
METRICS = {
    "mlp-digits": "accuracy",
    "cnn-mnist1d": "accuracy",
    "cnn-mnist1d-large": "accuracy",
    "resnet18-cifar100": "accuracy",
    "transformer-multi30k": "bleu",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one intra-op thread is faster, and steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LARGE, LARGE_SAMPLES = cnn_mnist1d.SIZES["cnn-mnist1d-large"]


@pytest.fixture(autouse=True)
def quick_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """cnn-mnist1d-large generates 20000 signals in ~10 s; these tests check its wiring on
    2000 (``test_cnn_mnist1d_large_splits`` checks that the real size is 20000)."""
    monkeypatch.setitem(cnn_mnist1d.SIZES, "cnn-mnist1d-large", (LARGE, 2000))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download attempts: tests must not fetch data sets on machines that have a network."""
    monkeypatch.setenv("FNGD_BENCH_OFFLINE", "1")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads are attempted but fail at once (and torchvision, if installed, is hidden)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.delenv("FNGD_BENCH_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setitem(sys.modules, "torchvision", None)


def _step(w: Workload, lr: float = 0.05) -> tuple[float, float]:
    """Three plain SGD steps on one batch; the first and last loss."""
    opt = torch.optim.SGD(w.model.parameters(), lr=lr)
    inputs, targets, _ = next(iter(w.train_loader))
    losses = []
    for _ in range(3):
        loss = w.loss_fn(w.forward(w.model, inputs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


# --------------------------------------------------------------------------- registry


def test_names_and_descriptions() -> None:
    assert sorted(workloads.names()) == sorted(NAMES)
    text = workloads.describe()
    assert len(text.splitlines()) == len(NAMES)
    for name in NAMES:
        assert name in text
        assert workloads.descriptions()[name]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown workload") as info:
        workloads.get("no-such-workload")
    for name in NAMES:
        assert name in str(info.value)


def test_random_mlp_is_a_registered_timing_only_family() -> None:
    w = workloads.get("mlp-random-32", seed=0)
    assert workloads.is_registered("mlp-random-32") and "mlp-random-32" not in workloads.names()
    assert w.name == "mlp-random-32" and w.data_source == "synthetic (timing only)"
    assert [m.out_features for m in w.model if isinstance(m, torch.nn.Linear)] == [32, 32, 10]
    ((inputs, targets, ids),) = list(w.train_loader)  # the one batch is the whole set
    assert inputs.shape == (128, 784) and torch.equal(ids, torch.arange(128))
    with pytest.raises(ValueError, match="width"):
        workloads.get("mlp-random-wide")


def test_unknown_size() -> None:
    with pytest.raises(ValueError, match="size"):
        workloads.get("mlp-digits", size="huge")


@pytest.mark.parametrize("name", NAMES)
def test_small_workload_builds_steps_and_evaluates(name: str, tmp_path, offline) -> None:
    w = workloads.get(name, device="cpu", seed=0, data_root=tmp_path, size="small")
    assert w.name == name
    assert w.metric_name == METRICS[name]
    assert w.higher_is_better
    assert set(w.hparams) <= set(workloads.OPTIMIZERS)  # what differs from the defaults
    assert w.data_source in ("real", "synthetic")
    assert w.data_note
    if name in ("resnet18-cifar100", "transformer-multi30k"):
        assert w.data_source == "synthetic"  # nothing under tmp_path, downloads disabled
        assert w.data_note.startswith("synthetic stand-in:")
    else:
        assert w.data_source == "real"
    assert len(w.train_loader) == -(-w.train_loader.num_samples // w.batch_size) > 0
    assert w.num_train == w.train_loader.num_samples

    inputs, targets, ids = next(iter(w.train_loader))
    assert ids.dtype == torch.int64 and ids.device.type == "cpu" and len(ids) == w.batch_size
    assert len(targets) == w.batch_size

    with torch.no_grad():  # the per-sample losses' mean is the batch loss (PER_SAMPLE)
        outputs = w.forward(w.model, inputs)
        losses = w.per_sample_loss(outputs, targets)
        assert losses.shape == (w.batch_size,)
        torch.testing.assert_close(losses.mean(), w.loss_fn(outputs, targets))

    first, last = _step(w)
    assert math.isfinite(first) and math.isfinite(last)
    assert last < first
    result = w.eval_fn(w.model)
    assert w.model.training  # eval_fn restores train mode
    assert {"eval_loss", w.metric_name} <= set(result)
    assert all(math.isfinite(v) for v in result.values())
    if w.metric_name == "accuracy":
        assert 0.0 <= result["accuracy"] <= 1.0
    else:
        assert 0.0 <= result["bleu"] <= 100.0
        assert 0.0 <= result["token_accuracy"] <= 1.0
    assert w.reached(w.target + 1e-9) and not w.reached(w.target - 1e-3)


def test_per_sample_token_loss_reads_the_token_mean_as_a_mean_over_samples() -> None:
    """Sample i's loss is its tokens' sum over the batch's mean token count."""
    from bench.workloads.common import per_sample_token_loss

    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(3, 4, 6, generator=g)
    targets = torch.tensor([[1, 2, 0, 0], [3, 4, 5, 0], [1, 0, 0, 0]])  # 0 pads: 2, 3, 1 tokens
    losses = per_sample_token_loss(outputs, targets, ignore_index=0)
    token = torch.nn.functional.cross_entropy(
        outputs.flatten(0, 1), targets.flatten(), ignore_index=0, reduction="none"
    ).view(3, 4)
    torch.testing.assert_close(losses, token.sum(1) / (6 / 3))
    torch.testing.assert_close(
        losses.mean(),
        torch.nn.functional.cross_entropy(outputs.flatten(0, 1), targets.flatten(), ignore_index=0),
    )


def test_same_seed_same_model_and_order(offline) -> None:
    a = workloads.get("mlp-digits", seed=3)
    b = workloads.get("mlp-digits", seed=3)
    c = workloads.get("mlp-digits", seed=4)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(
        torch.equal(pa, pc)
        for pa, pc in zip(a.model.parameters(), c.model.parameters(), strict=True)
    )
    assert torch.equal(next(iter(a.train_loader))[2], next(iter(b.train_loader))[2])
    assert not torch.equal(next(iter(a.train_loader))[2], next(iter(c.train_loader))[2])


def test_batch_size_override() -> None:
    w = workloads.get("mlp-digits", batch_size=100)
    assert w.batch_size == 100 and len(w.train_loader) == -(-w.num_train // 100)


# --------------------------------------------------------------------------- loader


def _epoch_ids(loader: TensorLoader) -> torch.Tensor:
    return torch.cat([ids for _, _, ids in loader])


def test_loader_permutation_and_deterministic_reshuffle() -> None:
    X = torch.arange(50, dtype=torch.float32)[:, None] * torch.ones(1, 3)
    y = torch.arange(50)
    loader = TensorLoader(X, y, 8, shuffle=True, drop_last=False, seed=7)
    assert len(loader) == 7
    epochs = [_epoch_ids(loader) for _ in range(3)]
    for ids in epochs:
        assert torch.equal(ids.sort().values, torch.arange(50))
    assert not torch.equal(epochs[0], epochs[1])
    assert not torch.equal(epochs[1], epochs[2])
    again = TensorLoader(X, y, 8, shuffle=True, drop_last=False, seed=7)
    assert all(torch.equal(e, _epoch_ids(again)) for e in epochs)
    again.set_epoch(1)
    assert torch.equal(_epoch_ids(again), epochs[1])
    other = TensorLoader(X, y, 8, shuffle=True, drop_last=False, seed=8)
    assert not torch.equal(_epoch_ids(other), epochs[0])
    # the batch is the gathered rows, and the last batch is short
    batches = list(loader)
    assert len(batches[-1][2]) == 50 - 6 * 8
    for xb, yb, ids in batches:
        assert torch.equal(xb, X[ids]) and torch.equal(yb, y[ids])


def test_loader_drop_last_tuple_inputs_and_augment() -> None:
    a, b, y = torch.randn(30, 4), torch.randint(0, 9, (30, 5)), torch.arange(30)
    calls = []

    def augment(inputs, generator):
        calls.append(generator)
        return (inputs[0] + torch.rand(inputs[0].shape, generator=generator), inputs[1])

    loader = TensorLoader((a, b), y, 7, seed=0, augment=augment, drop_last=True)
    assert len(loader) == 4
    batches = list(loader)
    assert len(batches) == 4 and all(len(ids) == 7 for _, _, ids in batches)
    ids = torch.cat([ids for _, _, ids in batches])
    assert len(set(ids.tolist())) == 28
    (xa, xb), yb, ids0 = batches[0]
    assert torch.equal(xb, b[ids0]) and torch.equal(yb, y[ids0]) and not torch.equal(xa, a[ids0])
    assert len(calls) == 4
    # the augmentation randomness is seeded per epoch too
    loader2 = TensorLoader((a, b), y, 7, seed=0, augment=augment)
    assert torch.equal(next(iter(loader2))[0][0], xa)
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(a, y, 31, drop_last=True)


def test_workload_loader_is_a_permutation_per_epoch() -> None:
    w = workloads.get("mlp-digits")
    loader = TensorLoader(
        w.train_loader.inputs, w.train_loader.targets, w.batch_size, drop_last=False, seed=1
    )
    ids = _epoch_ids(loader)
    assert torch.equal(ids.sort().values, torch.arange(w.num_train))
    assert not torch.equal(ids, _epoch_ids(loader))


def test_cifar_augment_is_crop_and_flip() -> None:
    x = torch.randn(16, 3, 32, 32)
    out = cifar.crop_flip_augment()(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    g = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 9, (16,), generator=g)
    dx = torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    black = torch.tensor([-m / s for m, s in zip(cifar.MEAN, cifar.STD, strict=True)])
    padded = black.view(1, 3, 1, 1).expand(16, 3, 40, 40).clone()
    padded[:, :, 4:36, 4:36] = x
    for i in range(16):
        ref = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        assert torch.equal(out[i], ref.flip(2) if flip[i] else ref)


# --------------------------------------------------------------------------- real data


def test_cnn_mnist1d_uses_conv2d_and_keeps_global_rng(monkeypatch) -> None:
    monkeypatch.setenv("FNGD_BENCH_CACHE", "off")  # generated here, not read from disk
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    mod = __import__("bench.workloads.cnn_mnist1d", fromlist=["generate"])
    mod.generate.cache_clear()
    x_train, y_train, x_test, y_test = mod.generate()
    assert (random.random(), np.random.rand()) == expected
    assert x_train.shape == (4000, 40) and x_test.shape == (1000, 40)
    w = workloads.get("cnn-mnist1d")
    kinds = {type(m) for m in w.model.modules()}
    assert torch.nn.Conv2d in kinds and torch.nn.Conv1d not in kinds
    assert w.train_loader.inputs.shape[1:] == (1, 1, 40)


def test_generated_mnist1d_is_kept_on_disk_and_read_back(tmp_path, monkeypatch) -> None:
    """A second process reads the signals the first generated: the same arrays, without
    the generator (replaced here by one that fails); ``off`` generates them afresh."""
    import mnist1d.data

    monkeypatch.setenv("FNGD_BENCH_CACHE", str(tmp_path))
    cnn_mnist1d.generate.cache_clear()
    first = cnn_mnist1d.generate(300)
    (kept,) = tmp_path.glob("mnist1d-*-300-*.npz")
    assert not list(tmp_path.glob("*.partial*"))

    def no_generator(args):
        raise AssertionError("generated again")

    cnn_mnist1d.generate.cache_clear()
    with monkeypatch.context() as m:
        m.setattr(mnist1d.data, "make_dataset", no_generator)
        second = cnn_mnist1d.generate(300)
    monkeypatch.setenv("FNGD_BENCH_CACHE", "off")
    cnn_mnist1d.generate.cache_clear()
    third = cnn_mnist1d.generate(300)
    cnn_mnist1d.generate.cache_clear()
    for a, b, c in zip(first, second, third, strict=True):
        assert a.dtype == b.dtype == c.dtype
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert first[0].shape == (240, 40) and first[2].shape == (60, 40)


def test_cnn_mnist1d_large_splits() -> None:
    """More signals from the same generator; train, val and test disjoint; a schedule."""
    assert LARGE_SAMPLES == 20000 and LARGE.target > 0.9
    w = workloads.get("cnn-mnist1d-large", seed=0)
    n_train_all = int(0.8 * 2000)  # quick_large's size
    assert w.num_val == round(0.1 * n_train_all) and w.num_train == n_train_all - w.num_val
    assert w.num_eval == 2000 - n_train_all
    assert w.train_loader.inputs.shape == (w.num_train, 1, 1, 40)
    ids = torch.cat([i for _, _, i in w.train_loader])
    assert torch.equal(ids.sort().values, torch.arange(w.num_train))
    assert w.schedule["schedule"] == "warmup-cosine"
    assert w.epochs == LARGE.epochs and w.hparams == {
        k: dict(v) for k, v in cnn_mnist1d.HPARAMS.items()
    }
    val, test = eval_function(w, "val")(w.model), eval_function(w, "test")(w.model)
    assert val["accuracy"] != test["accuracy"] or val["eval_loss"] != test["eval_loss"]


def _validation_rows(name: str) -> torch.Tensor:
    if name == "mlp-digits":
        from bench.workloads.mlp_digits import load_digits_split

        return torch.from_numpy(load_digits_split()[1][0])
    from bench.workloads.common import holdout

    x_all = cnn_mnist1d.generate()[0]
    _, val = holdout(len(x_all), cnn_mnist1d.VAL_FRACTION, cnn_mnist1d.SPLIT_SEED)
    return torch.from_numpy(x_all[val])


@pytest.mark.parametrize("name", ["mlp-digits", "cnn-mnist1d"])
def test_validation_split_is_held_out_from_training(name: str) -> None:
    w = workloads.get(name, seed=0)
    X_val = _validation_rows(name).flatten(1)
    assert w.val_eval_fn is not None and len(X_val) == w.num_val > 0
    train = w.train_loader.inputs.flatten(1)
    assert float(torch.cdist(X_val, train).min()) > 0.0  # no validation row is trained on
    with pytest.raises(ValueError, match="no validation split"):
        eval_function(workloads.get("mlp-random-32"), "val")


def _write_cifar_pickle(path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    fine = [int(v) for v in rng.integers(0, 100, size=n)]
    record = {  # the official release's keys (bytes, as Python 2 pickled them)
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
        b"batch_label": b"fake batch",
        b"fine_labels": fine,
        b"coarse_labels": [v // 5 for v in fine],
        b"data": data,
    }
    with open(path, "wb") as f:
        pickle.dump(record, f, protocol=2)
    return data, fine


def test_cifar_pickle_parser(tmp_path, offline) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data, fine = _write_cifar_pickle(folder / "train", 96, 0)
    _write_cifar_pickle(folder / "test", 40, 1)
    x, y = cifar.load_pickle_split(folder / "train")
    assert x.shape == (96, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x.reshape(96, -1), data) and y.tolist() == fine

    w = workloads.get("resnet18-cifar100", data_root=tmp_path, batch_size=32, size="small")
    assert w.data_source == "real"
    assert "cifar-100-python" in w.data_note
    assert w.num_train == 96 and w.num_eval == 40
    X = w.train_loader.inputs
    mean = torch.tensor(cifar.MEAN).view(3, 1, 1)
    std = torch.tensor(cifar.STD).view(3, 1, 1)
    expected = (torch.from_numpy(x[5]).float() / 255 - mean) / std
    assert torch.allclose(X[5], expected, atol=1e-6)
    assert w.target == cifar.TARGETS[("small", "real")]
    first, last = _step(w)
    assert math.isfinite(last)


def test_cifar_download_failure_falls_back_with_reason(tmp_path, no_network) -> None:
    w = workloads.get("resnet18-cifar100", data_root=tmp_path, size="small")
    assert w.data_source == "synthetic"
    assert "download failed" in w.data_note and "network unreachable (test)" in w.data_note
    assert not list(tmp_path.rglob("*.part"))
    assert w.train_loader.inputs.shape[1:] == (3, 32, 32)


def test_unreadable_cifar_falls_back_with_reason(tmp_path, no_network) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"not a pickle")
    (folder / "test").write_bytes(b"not a pickle")
    w = workloads.get("resnet18-cifar100", data_root=tmp_path, size="small")
    assert w.data_source == "synthetic" and "could not be read" in w.data_note


def _write_corpus(folder) -> None:
    de = ["ein mann fährt fahrrad .", "eine frau liest ein buch .", "zwei hunde spielen im park ."]
    en = ["a man rides a bike .", "a woman reads a book .", "two dogs play in the park ."]
    folder.mkdir(parents=True)
    (folder / "train.de").write_text("\n".join(de * 12) + "\n", encoding="utf-8")
    (folder / "train.en").write_text("\n".join(en * 12) + "\n", encoding="utf-8")
    with gzip.open(folder / "val.de.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(de[:2] + ["ein hund liest ."]) + "\n")
    with gzip.open(folder / "val.en.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(en[:2] + ["A dog reads."]) + "\n")


def test_multi30k_file_loader(tmp_path, offline) -> None:
    _write_corpus(tmp_path / "multi30k")
    splits = mt.load_multi30k_files(tmp_path / "multi30k")
    assert len(splits["train"][0]) == 36 and splits["val"][1][2] == "A dog reads."
    assert mt.tokenize("A dog, reads.") == ["a", "dog", ",", "reads", "."]

    w = workloads.get("transformer-multi30k", data_root=tmp_path, batch_size=8, size="small")
    assert w.data_source == "real"
    assert "Multi30K" in w.data_note and "val" in w.data_note
    assert w.num_train == 36 and w.num_eval == 3
    (src, tgt_in), tgt_out, ids = next(iter(w.train_loader))
    assert src.shape[0] == tgt_in.shape[0] == tgt_out.shape[0] == 8
    assert (tgt_in[:, 0] == mt.BOS).all()
    words = (tgt_out[:, :-1] != mt.PAD) & (tgt_out[:, :-1] != mt.EOS)
    assert torch.equal(tgt_in[:, 1:][words], tgt_out[:, :-1][words])  # teacher forcing shift
    assert ((tgt_out == mt.EOS).sum(dim=1) == 1).all()
    logits = w.forward(w.model, (src, tgt_in))
    assert logits.shape == (*tgt_out.shape, w.model.generator.out_features)
    result = w.eval_fn(w.model)
    assert {"eval_loss", "bleu", "token_accuracy"} <= set(result)


def test_multi30k_download_failure_falls_back_with_reason(tmp_path, no_network) -> None:
    w = workloads.get("transformer-multi30k", data_root=tmp_path, size="small")
    assert w.data_source == "synthetic"
    assert "download failed" in w.data_note and "network unreachable (test)" in w.data_note
    assert not list(tmp_path.rglob("*.part"))


def test_transformer_attention_uses_plain_linears(offline, tmp_path) -> None:
    w = workloads.get("transformer-multi30k", data_root=tmp_path, size="small")
    kinds = {type(m) for m in w.model.modules()}
    assert torch.nn.MultiheadAttention not in kinds
    attn = w.model.encoder[0].attn
    assert all(isinstance(getattr(attn, p), torch.nn.Linear) for p in ("q", "k", "v", "out"))
    src = w.train_loader.inputs[0][:4]
    decoded = mt.greedy_decode(w.model, src, max_len=6)
    assert decoded.shape[0] == 4 and decoded.shape[1] <= 6


# --------------------------------------------------------------------------- learning


def test_mlp_digits_learns() -> None:
    w = workloads.get("mlp-digits", seed=0)
    from fngd.optimizers import DEFAULTS

    hp = {**DEFAULTS["sgd"], **w.hparams["sgd"]}
    opt = torch.optim.SGD(
        w.model.parameters(), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
    )
    for _ in range(4):
        for inputs, targets, _ids in w.train_loader:
            loss = w.loss_fn(w.forward(w.model, inputs), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert w.eval_fn(w.model)["accuracy"] > 0.9


@pytest.mark.parametrize(("n", "batch", "world"), [(21, 8, 2), (17, 8, 2), (25, 8, 3), (9, 4, 4)])
def test_shard_splits_every_global_batch_in_rank_order(n, batch, world):
    X, y = torch.randn(n, 3), torch.arange(n)
    whole = TensorLoader(X, y, batch, seed=3)
    parts = []
    for rank in range(world):
        loader = TensorLoader(X, y, batch, seed=3)
        loader.shard(rank, world)
        parts.append(loader)
    assert len({len(p) for p in parts}) == 1
    for epoch in range(2):
        for p in parts:
            p.set_epoch(epoch)
        whole.set_epoch(epoch)
        ranks = [list(iter(p)) for p in parts]
        got = [torch.cat([r[b][2] for r in ranks]) for b in range(len(ranks[0]))]
        assert all(len(r[b][2]) > 0 for r in ranks for b in range(len(got)))
        # the ranks' batches, concatenated, are one process's order, every sample once
        assert torch.equal(torch.cat(got), torch.cat([ids for _, _, ids in whole]))
        assert sorted(torch.cat(got).tolist()) == list(range(n))
        for r in ranks:
            for x, t, ids in r:
                assert torch.equal(t, ids) and torch.equal(x, X[ids])
        sizes = [len(g) for g in got]
        if n % batch and n % batch < world:  # a last batch too small to share: joined
            assert len(got) == n // batch and sizes[-1] == batch + n % batch
        else:
            assert sizes == [len(ids) for _, _, ids in whole]


def test_shard_refuses_what_cannot_be_shared():
    loader = TensorLoader(torch.randn(3, 2), torch.arange(3), 2)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        loader.shard(2, 2)
    with pytest.raises(ValueError, match="3 samples cannot be shared by 4 ranks"):
        loader.shard(0, 4)


def _suggested() -> list[tuple[str, str, dict]]:
    """(workload, family, what it suggests) of every workload module, each size."""
    from bench.workloads import mlp_digits, mlp_random

    tables = {
        "mlp-digits": mlp_digits.HPARAMS,
        "cnn-mnist1d": cnn_mnist1d.HPARAMS,
        "resnet18-cifar100": cifar.HPARAMS,
        "transformer-multi30k (paper)": mt.HPARAMS["paper"],
        "transformer-multi30k (small)": mt.HPARAMS["small"],
        "mlp-random": mlp_random.HPARAMS,
    }
    return [(w, f, hp) for w, t in tables.items() for f, hp in t.items()]


@pytest.mark.parametrize(("workload", "family", "suggested"), _suggested())
def test_hparams_say_only_what_differs_from_the_defaults(workload, family, suggested) -> None:
    """A workload's suggestion restating a default would hide which settings are its own."""
    from fngd.optimizers import DEFAULTS

    defaults = DEFAULTS[family]
    assert suggested and set(suggested) <= set(defaults)
    same = [k for k, v in suggested.items() if defaults[k] == v]
    assert not same, f"{workload} restates {family}'s defaults: {same}"
