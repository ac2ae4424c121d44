"""``transformer-multi30k``: an encoder-decoder Transformer on Multi30K German->English.

Data, in order of preference:

1. ``data_root/multi30k/{train,val,test}.{de,en}`` (each optionally ``.gz``; ``train`` and
   one of ``val``/``test`` are required, evaluation uses ``val`` when present);
2. the raw files of the official release (github.com/multi30k/dataset, ``data/task1/raw``)
   downloaded into ``data_root/multi30k``, then 1;
3. otherwise a synthetic sequence-to-sequence stand-in (a fixed random token-to-token mapping
   with local reordering, variable lengths), ``data_source="synthetic"``, the reason in
   ``data_note``.

Text is lower-cased and split into words and punctuation; vocabularies come from the
training split (min frequency 2, specials ``<pad> <bos> <eos> <unk>``); sequences are capped
at ``MAX_LEN`` tokens. The loss is token cross-entropy ignoring padding (mean over tokens).
The metric is corpus BLEU (sacrebleu, 0-100) of greedy decodes of the evaluation split
against its tokenised references; ``eval_fn`` also reports teacher-forced token accuracy.

Attention is written out with separate ``nn.Linear`` q/k/v/output projections rather than
``nn.MultiheadAttention``, whose fused forward bypasses its Linear modules: the FNGD and KFAC
preconditioners find layers by module hooks on ``nn.Linear`` and would not see them.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.workloads.common import (
    build_model,
    describe_error,
    download,
    eval_mode,
    per_sample_token_loss,
    resolve_data_root,
)
from bench.workloads.loader import TensorLoader
from bench.workloads.workload import Workload

NAME = "transformer-multi30k"
DESCRIPTION = (
    "encoder-decoder Transformer, Multi30K German->English, BLEU "
    "(synthetic stand-in if the data is unavailable)"
)

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
MIN_FREQ = 2
MAX_LEN = 40  # tokens per sequence, specials included
SRC_LANG, TGT_LANG = "de", "en"
URL_BASE = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
# local split name -> file stem in the official repository
REMOTE_FILES = {"train": "train", "val": "val", "test": "test_2016_flickr"}
DATA_SEED = 0  # fixes the synthetic task, independent of the run seed

SIZES: dict[str, dict[str, Any]] = {
    "paper": {
        "d_model": 256,
        "heads": 8,
        "enc_layers": 3,
        "dec_layers": 3,
        "d_ff": 1024,
        "dropout": 0.1,
        "batch_size": 128,
        "epochs": 20,
        "n_train": None,
        "n_eval": None,  # None = the whole split
        # synthetic stand-in: Multi30K-sized
        "syn_vocab": 1000,
        "syn_len": (4, 20),
        "syn_train": 29_000,
        "syn_eval": 1_000,
    },
    "small": {
        "d_model": 32,
        "heads": 2,
        "enc_layers": 1,
        "dec_layers": 1,
        "d_ff": 64,
        "dropout": 0.0,
        "batch_size": 32,
        "epochs": 20,
        "n_train": 512,
        "n_eval": 128,
        "syn_vocab": 24,
        "syn_len": (3, 8),
        "syn_train": 1024,
        "syn_eval": 128,
    },
}
# BLEU that counts as reached, by (size, data_source). A 512-pair subset of Multi30K cannot
# be learned to a useful BLEU; its target only marks "produces some correct n-grams".
TARGETS = {
    ("paper", "real"): 25.0,
    ("paper", "synthetic"): 80.0,
    ("small", "real"): 2.0,
    ("small", "synthetic"): 10.0,
}

# What differs from the optimizers' defaults (fngd.optimizers.DEFAULTS), per size. The small
# ones come from short CPU sweeps of lr x damping on the synthetic stand-in (8 epochs, seed
# 0): NGD/FNGD diverged with damping 1e-3..1e-2, and FNGD (coefficients reused across epochs)
# wants a smaller step than NGD. The paper-size ones are the usual Transformer/AdamW starting
# points, with the same damping; they were not swept here.
HPARAMS: dict[str, dict[str, dict]] = {
    "paper": {
        "sgd": {"weight_decay": 1e-4},
        "adamw": {"lr": 5e-4},
        "kfac": {"lr": 0.05, "weight_decay": 1e-4, "damping": 1e-2},
        "ngd": {"lr": 0.05, "weight_decay": 1e-4, "damping": 0.1},
        "fngd": {"lr": 0.05, "weight_decay": 1e-4, "damping": 0.1},
    },
    "small": {
        "sgd": {"weight_decay": 1e-4},
        "adamw": {"lr": 3e-3},
        "kfac": {"weight_decay": 1e-4, "damping": 1e-2},
        "ngd": {"weight_decay": 1e-4, "damping": 0.1},
        "fngd": {"lr": 0.05, "weight_decay": 1e-4, "damping": 0.1},
    },
}


# --------------------------------------------------------------------------- model


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/output ``nn.Linear`` projections."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask``: bool, broadcastable to (N, heads, Tq, Tk), True where attending is allowed."""
        q, k, v = self._split(self.q(x)), self._split(self.k(context)), self._split(self.v(context))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        n, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(n, t, -1))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-LN: ``x + attn(ln(x))``, ``x + ff(ln(x))``."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, mask))
        return x + self.drop(self.ff(self.ln2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, heads, dropout)
        self.ln3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor,
        memory_mask: torch.Tensor,
    ) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.self_attn(h, h, self_mask))
        x = x + self.drop(self.cross_attn(self.ln2(x), memory, memory_mask))
        return x + self.drop(self.ff(self.ln3(x)))


def sinusoidal_positions(length: int, d_model: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class Seq2SeqTransformer(nn.Module):
    """Pre-LN encoder-decoder Transformer (batch first), sinusoidal positions, untied output.

    ``forward(src, tgt_in)`` -> logits ``(N, T, tgt_vocab)``; ``src``/``tgt_in`` are int64
    ``(N, S)``/``(N, T)`` padded with ``PAD``.
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 256,
        heads: int = 8,
        enc_layers: int = 3,
        dec_layers: int = 3,
        d_ff: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab, d_model, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model, padding_idx=PAD)
        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, heads, d_ff, dropout) for _ in range(enc_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(dec_layers)
        )
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.generator = nn.Linear(d_model, tgt_vocab)
        self.drop = nn.Dropout(dropout)

    def _embed(self, embed: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
        x = embed(tokens) * math.sqrt(self.d_model)
        x = x + sinusoidal_positions(tokens.shape[1], self.d_model, tokens.device)
        return self.drop(x)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(memory, memory_mask)``; the mask is (N, 1, 1, S), True at real tokens."""
        mask = (src != PAD)[:, None, None, :]
        x = self._embed(self.src_embed, src)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def decode(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        t = tgt_in.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=tgt_in.device).tril()
        self_mask = causal[None, None] & (tgt_in != PAD)[:, None, None, :]
        x = self._embed(self.tgt_embed, tgt_in)
        for layer in self.decoder:
            x = layer(x, memory, self_mask, memory_mask)
        return self.generator(self.dec_norm(x))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, memory_mask = self.encode(src)
        return self.decode(tgt_in, memory, memory_mask)


def forward(model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Teacher forcing: ``model(src, tgt_in)`` -> logits (N, T, V)."""
    src, tgt_in = inputs
    return model(src, tgt_in)


def token_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over non-pad target tokens, mean over tokens."""
    return F.cross_entropy(outputs.flatten(0, 1).float(), targets.flatten(), ignore_index=PAD)


def per_sample_token_losses(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``token_loss`` per sample (N,): their mean is ``token_loss`` (``PER_SAMPLE``)."""
    return per_sample_token_loss(outputs, targets, PAD)


@torch.no_grad()
def greedy_decode(model: Seq2SeqTransformer, src: torch.Tensor, max_len: int) -> torch.Tensor:
    """Greedy decodes, ``(N, <= max_len)`` token ids (no ``<bos>``), ``PAD`` after ``<eos>``."""
    memory, memory_mask = model.encode(src)
    ys = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        nxt = model.decode(ys, memory, memory_mask)[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    return ys[:, 1:]


# --------------------------------------------------------------------------- text


_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-case, then split into words and single punctuation marks."""
    return _TOKEN.findall(text.lower())


class Vocab:
    """Token <-> id, specials first, then tokens by descending frequency (ties by text)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = MIN_FREQ) -> Vocab:
        counts = Counter(tok for sent in sentences for tok in sent)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.itos[i])
        return out


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f]


def _find(folder: Path, split: str, lang: str) -> Path | None:
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_multi30k_files(folder: Path) -> dict[str, tuple[list[str], list[str]]]:
    """``{split: (german lines, english lines)}`` from ``folder``; needs train and val/test."""
    splits = {}
    for split in ("train", "val", "test"):
        de, en = _find(folder, split, SRC_LANG), _find(folder, split, TGT_LANG)
        if de is None or en is None:
            continue
        src, tgt = read_lines(de), read_lines(en)
        if len(src) != len(tgt):
            raise ValueError(f"{split}: {len(src)} German but {len(tgt)} English lines")
        splits[split] = (src, tgt)
    if "train" not in splits or not ({"val", "test"} & splits.keys()):
        raise FileNotFoundError(
            f"{folder}/{{train,val|test}}.{{{SRC_LANG},{TGT_LANG}}}[.gz] not found"
        )
    return splits


def fetch_multi30k(folder: Path) -> None:
    """Download the official raw files into ``folder`` as ``{split}.{lang}.gz`` (test optional)."""
    for split, stem in REMOTE_FILES.items():
        for lang in (SRC_LANG, TGT_LANG):
            dest = folder / f"{split}.{lang}.gz"
            if dest.is_file():
                continue
            try:
                download(f"{URL_BASE}{stem}.{lang}.gz", dest)
            except Exception:
                if split != "test":  # the test split is optional (evaluation uses val)
                    raise


def synthetic_pairs(
    vocab: int,
    lengths: tuple[int, int],
    n: int,
    rng: np.random.Generator,
    mapping: np.ndarray,
) -> tuple[list[list[str]], list[list[str]]]:
    """Source: random words; target: each word mapped, then every window of 3 reversed."""
    srcs, tgts = [], []
    for _ in range(n):
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        s = rng.integers(0, vocab, size=length)
        t = mapping[s]
        t = np.concatenate([t[i : i + 3][::-1] for i in range(0, length, 3)])
        srcs.append([f"s{i}" for i in s])
        tgts.append([f"t{i}" for i in t])
    return srcs, tgts


@dataclass
class Corpus:
    train_src: list[list[str]]
    train_tgt: list[list[str]]
    eval_src: list[list[str]]
    eval_tgt: list[list[str]]
    source: str
    note: str
    eval_split: str


def synthetic_corpus(cfg: dict[str, Any], why: str) -> Corpus:
    rng = np.random.default_rng(DATA_SEED)
    vocab, lengths = cfg["syn_vocab"], cfg["syn_len"]
    mapping = rng.permutation(vocab)
    tr_s, tr_t = synthetic_pairs(vocab, lengths, cfg["syn_train"], rng, mapping)
    ev_s, ev_t = synthetic_pairs(vocab, lengths, cfg["syn_eval"], rng, mapping)
    note = (
        f"synthetic stand-in: {why} ({len(tr_s)} train / {len(ev_s)} eval pairs, "
        f"{vocab}-word vocabulary, token mapping + reversal of 3-token windows)"
    )
    return Corpus(tr_s, tr_t, ev_s, ev_t, "synthetic", note, "synthetic")


def load_corpus(root: Path, cfg: dict[str, Any]) -> Corpus:
    folder = root / "multi30k"
    try:
        splits = load_multi30k_files(folder)
        where = f"Multi30K {SRC_LANG}->{TGT_LANG} from {folder}"
    except FileNotFoundError:
        try:
            fetch_multi30k(folder)
            splits = load_multi30k_files(folder)
            where = f"Multi30K {SRC_LANG}->{TGT_LANG} downloaded to {folder}"
        except Exception as exc:  # noqa: BLE001 - any failure means: use the stand-in
            why = f"Multi30K not found at {folder} and download failed: {describe_error(exc)}"
            return synthetic_corpus(cfg, why)
    except Exception as exc:  # noqa: BLE001 - unreadable files: say so, use the stand-in
        return synthetic_corpus(
            cfg, f"Multi30K at {folder} could not be read: {describe_error(exc)}"
        )
    eval_split = "val" if "val" in splits else "test"
    tr_s, tr_t = splits["train"]
    ev_s, ev_t = splits[eval_split]
    n_full = (len(tr_s), len(ev_s))
    if cfg["n_train"] is not None:
        tr_s, tr_t = tr_s[: cfg["n_train"]], tr_t[: cfg["n_train"]]
    if cfg["n_eval"] is not None:
        ev_s, ev_t = ev_s[: cfg["n_eval"]], ev_t[: cfg["n_eval"]]
    if (len(tr_s), len(ev_s)) != n_full:
        counts = f"first {len(tr_s)} of {n_full[0]} train / {len(ev_s)} of {n_full[1]} {eval_split}"
    else:
        counts = f"{n_full[0]} train / {n_full[1]} {eval_split}"
    note = f"{where} ({counts} pairs)"
    return Corpus(
        [tokenize(s) for s in tr_s],
        [tokenize(s) for s in tr_t],
        [tokenize(s) for s in ev_s],
        [tokenize(s) for s in ev_t],
        "real",
        note,
        eval_split,
    )


def encode_pairs(
    src: list[list[str]],
    tgt: list[list[str]],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    max_len: int = MAX_LEN,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded int64 ``(src, tgt_in, tgt_out)``: ``src = w + <eos>``, ``tgt_in = <bos> + w``,
    ``tgt_out = w + <eos>``, each at most ``max_len`` long."""
    n = len(src)
    s_ids = [src_vocab.encode(s[: max_len - 1]) + [EOS] for s in src]
    t_ids = [tgt_vocab.encode(t[: max_len - 1]) for t in tgt]
    s_len = max((len(s) for s in s_ids), default=1)
    t_len = max((len(t) + 1 for t in t_ids), default=1)
    S = torch.full((n, s_len), PAD, dtype=torch.long)
    T_in = torch.full((n, t_len), PAD, dtype=torch.long)
    T_out = torch.full((n, t_len), PAD, dtype=torch.long)
    for i, (s, t) in enumerate(zip(s_ids, t_ids, strict=True)):
        S[i, : len(s)] = torch.tensor(s)
        T_in[i, : len(t) + 1] = torch.tensor([BOS] + t)
        T_out[i, : len(t) + 1] = torch.tensor(t + [EOS])
    return S, T_in, T_out


def make_eval_fn(
    src: torch.Tensor,
    tgt_in: torch.Tensor,
    tgt_out: torch.Tensor,
    references: list[str],
    tgt_vocab: Vocab,
    batch_size: int = 256,
):
    import sacrebleu

    max_decode = min(tgt_out.shape[1] + 10, 2 * MAX_LEN)

    def eval_fn(model: nn.Module) -> dict[str, float]:
        with eval_mode(model):
            loss_sum = torch.zeros((), dtype=torch.float64, device=src.device)
            correct = torch.zeros((), dtype=torch.int64, device=src.device)
            tokens = torch.zeros((), dtype=torch.int64, device=src.device)
            hyps: list[str] = []
            for start in range(0, len(src), batch_size):
                sl = slice(start, start + batch_size)
                logits = model(src[sl], tgt_in[sl]).float()
                target = tgt_out[sl]
                keep = target != PAD
                loss_sum += F.cross_entropy(
                    logits.flatten(0, 1), target.flatten(), ignore_index=PAD, reduction="sum"
                ).double()
                correct += ((logits.argmax(-1) == target) & keep).sum()
                tokens += keep.sum()
                decoded = greedy_decode(model, src[sl], max_decode).cpu().tolist()
                hyps.extend(" ".join(tgt_vocab.decode(ids)) for ids in decoded)
            n_tok = max(int(tokens.item()), 1)
            bleu = sacrebleu.corpus_bleu(hyps, [references]).score
            return {
                "eval_loss": loss_sum.item() / n_tok,
                "bleu": float(bleu),
                "token_accuracy": correct.item() / n_tok,
            }

    return eval_fn


def build(
    device: torch.device,
    seed: int,
    batch_size: int | None,
    data_root: str | os.PathLike[str] | None,
    size: str,
) -> Workload:
    cfg = SIZES[size]
    corpus = load_corpus(resolve_data_root(data_root), cfg)
    src_vocab = Vocab.build(corpus.train_src)
    tgt_vocab = Vocab.build(corpus.train_tgt)
    train = [
        t.to(device) for t in encode_pairs(corpus.train_src, corpus.train_tgt, src_vocab, tgt_vocab)
    ]
    evals = [
        t.to(device) for t in encode_pairs(corpus.eval_src, corpus.eval_tgt, src_vocab, tgt_vocab)
    ]
    references = [" ".join(t) for t in corpus.eval_tgt]
    batch = batch_size or cfg["batch_size"]
    model = build_model(
        lambda: Seq2SeqTransformer(
            len(src_vocab),
            len(tgt_vocab),
            d_model=cfg["d_model"],
            heads=cfg["heads"],
            enc_layers=cfg["enc_layers"],
            dec_layers=cfg["dec_layers"],
            d_ff=cfg["d_ff"],
            dropout=cfg["dropout"],
        ),
        seed,
        device,
    )
    loader = TensorLoader(
        (train[0], train[1]), train[2], batch, shuffle=True, drop_last=False, seed=seed
    )
    note = (
        f"{corpus.note}; vocab {SRC_LANG} {len(src_vocab)} / {TGT_LANG} {len(tgt_vocab)} "
        f"(min freq {MIN_FREQ}), lengths capped at {MAX_LEN}"
    )
    return Workload(
        name=NAME,
        model=model,
        loss_fn=token_loss,
        per_sample_loss=per_sample_token_losses,
        train_loader=loader,
        eval_fn=make_eval_fn(evals[0], evals[1], evals[2], references, tgt_vocab),
        metric_name="bleu",
        higher_is_better=True,
        target=TARGETS[(size, corpus.source)],
        data_source=corpus.source,
        data_note=note,
        batch_size=batch,
        epochs=cfg["epochs"],
        hparams={k: dict(v) for k, v in HPARAMS[size].items()},
        forward=forward,
        device=device,
        seed=seed,
        size=size,
        description=DESCRIPTION,
        num_train=len(corpus.train_src),
        num_eval=len(corpus.eval_src),
    )


build.description = DESCRIPTION  # its line in `fngd-bench list`
