#!/usr/bin/python3
"""train_twin.py: the training objective of docs/training.md (sections 1-4) in plain PyTorch, written from the
spec alone on top of the model twin (scripts/moon_twin.py). The `training_parity` suite compares it with moon's
C++ losses (tests/test_training_parity.cpp); `bench` is the torch peer of moon_bench's train_step.

Subcommands:

  loss      --ckpt W.safetensors --inputs IN.safetensors --out OUT.safetensors [--ref R.safetensors]
            (--ckpt/--inputs/--out/--ref may repeat, in order, to run many cases at one torch start; --ref "-"
            for a case without GRPO.) Computes L_con and its parts and every gradient, and with GRPO inputs the
            rewards, advantages and L_pg with its gradients. Layout below.
  selfcheck gradients of L_con and L_pg against central finite differences in float64, and losses whose value is
            known in closed form; exit 1 on a failure.
  bench     --config small --batch 32 --steps N [--dtype f32|bf16] [--threads 2] [--text-len 24]
            one contrastive training step (four views of B products, L_con, backward, clipping, AdamW) per
            step on synthetic inputs of the C++ benchmark's shapes; prints {"step_ms": [...], "peak_rss_mb": ..}.

IN (all optional groups; a view with no rows is absent):
  <X>.<batch tensor>   the assembled ModelBatch of view X in P, T, V, M (names of ModelBatch::named())
  <X>.product          (n_X) i64: the product (row of the loader batch) of each row
  category             (B) i64: each product's category
  logit_scale          (1) f32: train.logit_scale
  metadata moon.train_options: JSON {max_logit_scale, hard_negative_weight, inter, intra, filtering, filter_kappa,
           filter_threshold, margin (the filtering margin of this step), matryoshka_dims, matryoshka_weight,
           aux_weight, loss_scale, chunk}
  GRPO: G.<batch tensor> (the assembled rollout rows), grpo.tokens (sum of lengths) i64 and grpo.lengths (R) i64
        (each rollout's generated tokens, concatenated), grpo.rewards (R) f32 (the rewards the advantages are
        computed from), grpo.candidates (N, D) f32, grpo.candidate_of_anchor (A) i64, grpo.anchor (R) i64;
        metadata moon.grpo_options: JSON {group, clip_eps, kl_beta, format_reward, negatives} and
        moon.special: JSON {im_start, image, image_end, think, think_end, emb, pad, eos}.
OUT (f32 unless noted):
  con.total con.inter con.intra con.aux con.matryoshka con.temperature con.kept_fraction, con.emb.<X> (n_X, D),
  con.grad.<param> for every parameter and con.grad.logit_scale (gradients of loss_scale * L_con);
  pg.loss pg.kl pg.clip_fraction pg.mean_length, pg.retrieval pg.format pg.reward pg.advantage (R),
  pg.scored_mask (R, T) i64, pg.logprobs (R, T) (the policy's log-probs on scored tokens, 0 elsewhere),
  pg.grad.<param> for every parameter (gradients of L_pg).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moon_twin  # noqa: E402  (the model twin, docs/model.md)
from moon_twin import Twin, load_tensors, parse_config, save_tensors  # noqa: E402

VIEWS = ("P", "T", "V", "M")
BATCH_U8 = ("keep", "pool_mask", "text_mask", "has_image")

DEFAULT_OPTIONS = {
    "max_logit_scale": 100.0, "hard_negative_weight": 2.0, "inter": True, "intra": True, "filtering": True,
    "filter_kappa": 10.0, "filter_threshold": 0.6, "margin": 0.2, "matryoshka_dims": [], "matryoshka_weight": 1.0,
    "aux_weight": 0.0, "loss_scale": 1.0, "chunk": 0,
}
DEFAULT_GRPO = {"group": 4, "clip_eps": 0.2, "kl_beta": 0.04, "format_reward": 0.1, "negatives": "mean"}
DEFAULT_SPECIAL = {"im_start": 1, "image": 3, "image_end": 4, "think": 5, "think_end": 6, "emb": 7, "pad": 8, "eos": 0}


def fail(message):
    sys.exit(f"train_twin: {message}")


# ---------------------------------------------------------------------------------------------------------
# Section 2: the contrastive losses, on embeddings.

def scale_value(logit_scale, max_logit_scale):
    """s = exp(clamp(logit_scale, 0, ln(max))); torch's clamp passes the gradient only inside the range."""
    return torch.exp(torch.clamp(logit_scale.reshape(()), 0.0, math.log(max_logit_scale)))


def hard_mask(query_cat, cand_cat, positive):
    """H (Nq, Nc) bool: candidate j != positive[i] of the same category as query i."""
    same = query_cat[:, None] == cand_cat[None, :]
    not_pos = torch.arange(len(cand_cat))[None, :] != positive[:, None]
    return same & not_pos


def info_nce(q, k, positive, s, hard, hard_weight, weights):
    """sum_i w_i CE_i / sum_i w_i with logits s q.k (+ ln(hard_weight) on hard negatives)."""
    logits = s * (q @ k.t())
    if hard is not None:
        logits = logits + hard.to(logits.dtype) * math.log(hard_weight)
    ce = torch.logsumexp(logits, dim=1) - logits[torch.arange(len(positive)), positive]
    if weights is None:
        return ce.mean()
    return (weights * ce).sum() / weights.sum()


def filter_weights(q, k, positive, hard, kappa, threshold, margin):
    """w_i = min(1, sigmoid(kappa (q.k_pos - hardest - m)) / threshold), detached; 1 without negatives."""
    sims = (q @ k.t()).detach()
    n_q, n_c = sims.shape
    w = torch.ones(n_q, dtype=sims.dtype)
    for i in range(n_q):
        negatives = hard[i].clone()
        if not bool(negatives.any()):
            negatives = torch.arange(n_c) != positive[i]
        if not bool(negatives.any()):
            continue
        hardest = sims[i][negatives].max()
        phi = torch.sigmoid(kappa * (sims[i, positive[i]] - hardest - margin))
        w[i] = torch.clamp(phi / threshold, max=1.0)
    return w


def inter_loss(emb, products, category, s, opt, tag="full"):
    """L_inter: mean over the present views T, V, M of InfoNCE(X -> P) with filtering; (loss, weights list).
    opt["frozen_weights"], when a dict, keeps the first weights computed per (tag, view) (finite differences
    must hold the detached weights fixed, as autograd does)."""
    p_rows = {int(p): r for r, p in enumerate(products["P"].tolist())}
    cand_cat = category[products["P"]]
    terms, weights = [], []
    for x in ("T", "V", "M"):
        if x not in emb:
            continue
        positive = torch.tensor([p_rows[int(p)] for p in products[x].tolist()], dtype=torch.int64)
        hard = hard_mask(category[products[x]], cand_cat, positive)
        w = None
        if opt["filtering"]:
            frozen = opt.get("frozen_weights")
            if frozen is not None and (tag, x) in frozen:
                w = frozen[(tag, x)]
            else:
                w = filter_weights(emb[x], emb["P"], positive, hard, opt["filter_kappa"], opt["filter_threshold"],
                                   opt["margin"])
                if frozen is not None:
                    frozen[(tag, x)] = w
            weights.append(w)
        terms.append(info_nce(emb[x], emb["P"], positive, s, hard, opt["hard_negative_weight"], w))
    if not terms:
        return torch.zeros((), dtype=emb["P"].dtype), weights
    return torch.stack(terms).mean(), weights


def intra_loss(emb, products, category, s, opt):
    """L_intra: V <-> T' over the products with both a T and a V row (no filtering); 0 below 2 products."""
    if "T" not in emb or "V" not in emb:
        return torch.zeros(())
    t_rows = {int(p): r for r, p in enumerate(products["T"].tolist())}
    v_rows = {int(p): r for r, p in enumerate(products["V"].tolist())}
    both = sorted(set(t_rows) & set(v_rows))
    if len(both) < 2:
        return torch.zeros(())
    ev = emb["V"][torch.tensor([v_rows[p] for p in both])]
    et = emb["T"][torch.tensor([t_rows[p] for p in both])]
    cats = category[torch.tensor(both)]
    positive = torch.arange(len(both))
    hard = hard_mask(cats, cats, positive)
    hw = opt["hard_negative_weight"]
    return (info_nce(ev, et, positive, s, hard, hw, None) + info_nce(et, ev, positive, s, hard, hw, None)) / 2


def prefix(e, d):
    """e[:, :d] re-normalised."""
    head = e[:, :d]
    return head / head.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def contrastive_loss(emb, products, category, logit_scale, aux, opt):
    """L_con and its parts (docs/training.md section 2): dict of tensors."""
    s = scale_value(logit_scale, opt["max_logit_scale"])
    zero = torch.zeros((), dtype=emb["P"].dtype)
    inter, weights = inter_loss(emb, products, category, s, opt) if opt["inter"] else (zero, [])
    intra = intra_loss(emb, products, category, s, opt) if opt["intra"] else zero
    mat = zero
    if opt["matryoshka_dims"] and opt["inter"]:
        parts = [inter_loss({x: prefix(e, d) for x, e in emb.items()}, products, category, s, opt, d)[0]
                 for d in opt["matryoshka_dims"]]
        mat = torch.stack(parts).mean()
    total = inter + intra + opt["aux_weight"] * aux + opt["matryoshka_weight"] * mat
    kept = torch.cat(weights).mean() if weights else torch.ones(())
    return {"total": total, "inter": inter, "intra": intra, "aux": aux, "matryoshka": mat,
            "temperature": 1.0 / s.detach(), "kept_fraction": kept}


# ---------------------------------------------------------------------------------------------------------
# Section 1: embedding the views (forwards of at most `chunk` rows; aux = mean over the forwards).

def vision_tokens(cfg):
    vc = cfg["vision"]
    return (vc["image_size"] // vc["patch_size"]) ** 2 // cfg["projector"]["merge"] ** 2


def slice_rows(batch, lo, hi, cfg):
    """Rows [lo, hi) of an assembled batch, with its images and vision slots re-indexed."""
    out = {k: v[lo:hi] for k, v in batch.items() if k != "pixels"}
    image_row = out["image_row"]
    have = image_row[image_row >= 0]
    if "pixels" in batch and len(have) > 0:
        first, last = int(have.min()), int(have.max())
        side = batch["pixels"].shape[-1]
        m_tokens = (side // cfg["vision"]["patch_size"]) ** 2 // cfg["projector"]["merge"] ** 2
        out["pixels"] = batch["pixels"][first:last + 1]
        out["image_row"] = torch.where(image_row >= 0, image_row - first, image_row)
        slots = out["vision_slot"]
        out["vision_slot"] = torch.where(slots >= 0, slots - first * m_tokens, slots)
    return out


def embed_view(twin, batch, chunk, auxes):
    """(n, D) embeddings of an assembled view; appends each forward's aux loss to auxes."""
    rows = batch["token_ids"].shape[0]
    step = rows if chunk <= 0 else chunk
    parts = []
    for lo in range(0, rows, step):
        part = batch if step >= rows else slice_rows(batch, lo, min(rows, lo + step), twin.cfg)
        out = twin.forward(part)
        parts.append(out["embedding"])
        auxes.append(out["aux_loss"])
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def embed_views(twin, views, chunk):
    """{X: (n_X, D)} and the aux loss (mean over all forwards)."""
    auxes, emb = [], {}
    for x, batch in views.items():
        emb[x] = embed_view(twin, batch, chunk, auxes)
    aux = torch.stack([a.reshape(()) for a in auxes]).mean() if auxes else torch.zeros(())
    return emb, aux


# ---------------------------------------------------------------------------------------------------------
# Section 4: GRPO.

def marker_ids(special):
    return {special[k] for k in ("im_start", "image", "image_end", "think", "emb", "pad", "eos")}


def format_reward(tokens, special):
    """1 if the rollout ends with </think> after at least one token, none of which is a marker; else 0."""
    if len(tokens) < 2 or tokens[-1] != special["think_end"]:
        return 0.0
    return 0.0 if any(t in marker_ids(special) for t in tokens[:-1]) else 1.0


def group_advantages(rewards, group):
    """(r - mean_g) / (std_g + 1e-4), std with divisor G, per group of consecutive rewards."""
    r = torch.as_tensor(rewards, dtype=torch.float64).reshape(-1, group)
    mean = r.mean(dim=1, keepdim=True)
    std = ((r - mean) ** 2).mean(dim=1, keepdim=True).sqrt()
    return ((r - mean) / (std + 1e-4)).reshape(-1)


def scored_mask(batch, rollouts, special):
    """(R, T) bool: each rollout row's reasoning tokens and its </think> if generated. Checks that the row holds
    <think> reasoning </think> <emb> with reasoning = the rollout without a final </think>."""
    ids, keep = batch["token_ids"], batch["keep"].bool()
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for b, tokens in enumerate(rollouts):
        finished = len(tokens) > 0 and tokens[-1] == special["think_end"]
        reasoning = tokens[:-1] if finished else tokens
        row = ids[b][keep[b]].tolist()
        if special["think"] not in row:
            fail(f"rollout row {b} has no <think>")
        start = row.index(special["think"]) + 1
        want = reasoning + [special["think_end"], special["emb"]]
        if row[start:] != want:
            fail(f"rollout row {b} holds {row[start:]} after <think>, expected {want}")
        n = len(reasoning) + (1 if finished else 0)
        kept_positions = keep[b].nonzero().squeeze(1)
        mask[b, kept_positions[start:start + n]] = True
    return mask


def token_logprobs(twin, batch):
    """(R, T): log p(token t | tokens before t), read at position t - 1 (right-padded rows); 0 at t = 0."""
    inputs, _, _, hook = twin.prepare(batch)
    hidden, _ = twin.decoder(inputs, batch["positions"], batch["keep"], batch["modality"], hook)
    logp = torch.log_softmax(twin.lin(hidden, twin.lm_weight()), dim=-1)            # (R, T, V)
    ids = batch["token_ids"]
    picked = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)                    # (R, T-1)
    return torch.cat([torch.zeros(ids.shape[0], 1, dtype=picked.dtype), picked], dim=1)


def policy_loss(lp, old, ref, mask, advantages, clip_eps, kl_beta):
    """L_pg of section 6 from per-token log-probs (R, T) of the policy, old (detached) and the reference.
    -> (loss, mean kl over scored tokens, fraction of clipped scored tokens)."""
    A = advantages.to(lp.dtype)[:, None]
    ratio = torch.exp(lp - old)
    pg = -torch.min(ratio * A, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * A)
    kl = torch.exp(ref - lp) - (ref - lp) - 1
    m = mask.to(lp.dtype)
    per_rollout = ((pg + kl_beta * kl) * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
    loss = per_rollout.mean()
    clipped = ((ratio < 1 - clip_eps) | (ratio > 1 + clip_eps)) & mask
    return loss, (kl * m).sum().detach() / m.sum(), clipped.sum().double() / mask.sum()


def retrieval_rewards(e, candidates, candidate_of_anchor, anchor, negatives):
    """r_ret (R): e.p_pos - mean (or max) over the other candidates of e.p."""
    sims = e @ candidates.t()                                                       # (R, N)
    out = []
    for r in range(e.shape[0]):
        pos = int(candidate_of_anchor[int(anchor[r])])
        others = torch.cat([sims[r, :pos], sims[r, pos + 1:]])
        if len(others) == 0:  # a single candidate: the positive's similarity alone
            out.append(sims[r, pos])
            continue
        neg = others.mean() if negatives == "mean" else others.max()
        out.append(sims[r, pos] - neg)
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------------------
# The `loss` subcommand.

def load_twin(path):
    tensors, metadata = load_tensors(path)
    if "moon.config" not in metadata:
        fail(f"{path} has no moon.config metadata")
    cfg = parse_config(metadata["moon.config"])
    params = {n: t.float().requires_grad_(True) for n, t in tensors.items() if not n.startswith("train.")}
    return Twin(cfg, params)


def batch_of(tensors, prefix_):
    """The ModelBatch tensors stored under `prefix_.` (None when the view is absent)."""
    b = {k[len(prefix_) + 1:]: v for k, v in tensors.items() if k.startswith(prefix_ + ".")}
    if "token_ids" not in b:
        return None
    b.pop("product", None)
    for name in BATCH_U8:
        b[name] = b[name].to(torch.uint8)
    return b


def run_contrastive(twin, tensors, opt):
    views = {x: b for x in VIEWS if (b := batch_of(tensors, x)) is not None}
    if "P" not in views:
        fail("the inputs hold no P view (P.token_ids)")
    products = {x: tensors[x + ".product"] for x in views}
    logit_scale = tensors["logit_scale"].clone().requires_grad_(True)
    emb, aux = embed_views(twin, views, int(opt["chunk"]))
    parts = contrastive_loss(emb, products, tensors["category"], logit_scale, aux, opt)
    (opt["loss_scale"] * parts["total"]).backward()
    out = [("con." + k, v.detach().reshape(())) for k, v in parts.items()]
    out += [("con.emb." + x, e.detach()) for x, e in emb.items()]
    for name, t in twin.p.items():
        out.append(("con.grad." + name, t.grad if t.grad is not None else torch.zeros_like(t)))
    out.append(("con.grad.logit_scale", logit_scale.grad if logit_scale.grad is not None else torch.zeros(1)))
    return out


def run_grpo(policy, reference, tensors, gopt, special):
    batch = batch_of(tensors, "G")
    lengths = tensors["grpo.lengths"].tolist()
    flat = tensors["grpo.tokens"].tolist()
    rollouts, at = [], 0
    for n in lengths:
        rollouts.append(flat[at:at + n])
        at += n
    mask = scored_mask(batch, rollouts, special)
    with torch.no_grad():
        e = policy.forward(batch)["embedding"]
        ref_lp = token_logprobs(reference, batch)
    fmt = torch.tensor([format_reward(t, special) for t in rollouts], dtype=torch.float64)
    ret = retrieval_rewards(e, tensors["grpo.candidates"], tensors["grpo.candidate_of_anchor"], tensors["grpo.anchor"],
                            gopt["negatives"]).double()
    advantages = group_advantages(tensors["grpo.rewards"].double(), int(gopt["group"]))
    for t in policy.p.values():
        t.grad = None
    lp = token_logprobs(policy, batch)
    loss, kl, clip = policy_loss(lp, lp.detach(), ref_lp, mask, advantages, gopt["clip_eps"], gopt["kl_beta"])
    loss.backward()
    out = [("pg.loss", loss.detach()), ("pg.kl", kl), ("pg.clip_fraction", clip.float()),
           ("pg.mean_length", torch.tensor(float(sum(lengths)) / len(lengths))),
           ("pg.retrieval", ret), ("pg.format", fmt), ("pg.reward", ret + gopt["format_reward"] * fmt),
           ("pg.advantage", advantages), ("pg.scored_mask", mask.to(torch.int64)),
           ("pg.logprobs", (lp * mask).detach())]
    for name, t in policy.p.items():
        out.append(("pg.grad." + name, t.grad if t.grad is not None else torch.zeros_like(t)))
    return out


def cmd_loss(args):
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and immune to spinning on a busy machine
    n = len(args.ckpt)
    if len(args.inputs) != n or len(args.out) != n or (args.ref and len(args.ref) != n):
        fail("give as many --ckpt as --inputs and --out (and --ref, if any); they pair up in order")
    for i in range(n):
        tensors, metadata = load_tensors(args.inputs[i])
        out = []
        if "P.token_ids" in tensors:
            opt = dict(DEFAULT_OPTIONS, **json.loads(metadata.get("moon.train_options", "{}")))
            out += run_contrastive(load_twin(args.ckpt[i]), tensors, opt)
        if "G.token_ids" in tensors:
            if not args.ref or args.ref[i] == "-":
                fail(f"{args.inputs[i]} holds GRPO inputs but no --ref was given for it")
            gopt = dict(DEFAULT_GRPO, **json.loads(metadata.get("moon.grpo_options", "{}")))
            special = dict(DEFAULT_SPECIAL, **json.loads(metadata.get("moon.special", "{}")))
            out += run_grpo(load_twin(args.ckpt[i]), load_twin(args.ref[i]), tensors, gopt, special)
        if not out:
            fail(f"{args.inputs[i]} holds neither contrastive views (P.token_ids) nor GRPO rows (G.token_ids)")
        save_tensors(args.out[i], out)


# ---------------------------------------------------------------------------------------------------------
# Synthetic views (selfcheck and bench): B products, some without image or text.

def synthetic_row(cfg, text, image, reasoning=None, think_end=True):
    """One assembled row as (ids, slots-as-local-vision-index or -1, pool, text flags, modality)."""
    M = vision_tokens(cfg)
    ids, local, pool, txt = [1], [-1], [0], [0]
    if image:
        ids += [3] + [8] * M + [4]
        local += [-1] + list(range(M)) + [-1]
        pool += [0] + [1] * M + [0]
        txt += [0] * (M + 2)
    ids += text
    local += [-1] * len(text)
    pool += [1] * len(text)
    txt += [1] * len(text)
    if reasoning is not None:
        ids += [5] + reasoning + ([6] if think_end else [])
        local += [-1] * (len(reasoning) + 1 + int(think_end))
        pool += [0] + [1] * len(reasoning) + [0] * int(think_end)
        txt += [0] * (len(reasoning) + 1 + int(think_end))
    ids.append(7)
    local.append(-1)
    pool.append(0)
    txt.append(0)
    modality = 2 if (image and text) else (1 if image else 0)
    return ids, local, pool, txt, modality


def assemble(cfg, rows, images):
    """rows: list of (text ids, image index or -1, reasoning or None) -> a right-padded batch dict."""
    M = vision_tokens(cfg)
    built = [synthetic_row(cfg, t, i >= 0, r) for t, i, r in rows]
    T = max(len(b[0]) for b in built)
    B = len(rows)
    batch = {"token_ids": torch.full((B, T), 8, dtype=torch.int64), "keep": torch.zeros(B, T, dtype=torch.uint8),
             "positions": torch.zeros(B, T, dtype=torch.int64), "vision_slot": torch.full((B, T), -1, dtype=torch.int64),
             "pool_mask": torch.zeros(B, T, dtype=torch.uint8), "text_mask": torch.zeros(B, T, dtype=torch.uint8),
             "emb_index": torch.zeros(B, dtype=torch.int64), "modality": torch.zeros(B, dtype=torch.int64),
             "image_row": torch.full((B,), -1, dtype=torch.int64), "has_image": torch.zeros(B, dtype=torch.uint8)}
    used = []
    for b, ((ids, local, pool, txt, modality), (_, image, _)) in enumerate(zip(built, rows)):
        L = len(ids)
        batch["token_ids"][b, :L] = torch.tensor(ids)
        batch["keep"][b, :L] = 1
        batch["positions"][b, :L] = torch.arange(L)
        batch["pool_mask"][b, :L] = torch.tensor(pool, dtype=torch.uint8)
        batch["text_mask"][b, :L] = torch.tensor(txt, dtype=torch.uint8)
        batch["emb_index"][b] = L - 1
        batch["modality"][b] = modality
        if image >= 0:
            slot = len(used)
            used.append(image)
            batch["image_row"][b] = slot
            batch["has_image"][b] = 1
            loc = torch.tensor(local)
            batch["vision_slot"][b, :L] = torch.where(loc >= 0, loc + slot * M, loc)
    if used:
        batch["pixels"] = images[torch.tensor(used)]
    return batch


def synthetic_views(cfg, products, images, images2):
    """products: list of (text ids or [], has image). -> (views {X: batch}, product lists {X: (n) i64})."""
    rows = {x: [] for x in VIEWS}
    prods = {x: [] for x in VIEWS}
    pix = {"P": images, "T": None, "V": images, "M": images2}
    for p, (text, has_image) in enumerate(products):
        image = p if has_image else -1
        rows["P"].append((text, image, None)), prods["P"].append(p)
        if text:
            rows["T"].append((text, -1, None)), prods["T"].append(p)
        if has_image:
            rows["V"].append(([], image, None)), prods["V"].append(p)
        if text and has_image:
            rows["M"].append((text, image, None)), prods["M"].append(p)
    views = {x: assemble(cfg, rows[x], pix[x]) for x in VIEWS if rows[x]}
    return views, {x: torch.tensor(prods[x], dtype=torch.int64) for x in views}


def random_params(cfg, gen, dtype=torch.float32):
    """Every parameter of docs/model.md with random values (nonzero gates and norms, so all paths matter)."""
    params = {}
    for name, (shape, kind) in moon_twin.param_shapes(cfg).items():
        t = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.05
        if kind == "one":
            t = 1 + t
        elif kind == "w" and name.endswith(".gate"):
            t = t * 10
        params[name] = t.to(dtype).requires_grad_(True)
    return params


# ---------------------------------------------------------------------------------------------------------
# selfcheck: finite differences in float64 and closed-form losses.

class Checker:
    def __init__(self):
        self.failures = 0

    def expect(self, ok, message):
        print(("ok   " if ok else "FAIL ") + message)
        self.failures += 0 if ok else 1


def finite_difference(fn, tensor, index, h=1e-6):
    """d fn / d tensor[index] by central differences (fn returns a float64 scalar)."""
    with torch.no_grad():
        flat = tensor.view(-1)
        keep = flat[index].item()
        flat[index] = keep + h
        up = fn().item()
        flat[index] = keep - h
        down = fn().item()
        flat[index] = keep
    return (up - down) / (2 * h)


def check_gradients(check, label, fn, named, picks_per_tensor, gen):
    """Autograd gradient of fn against finite differences at a few random entries of each tensor."""
    for t in named.values():
        t.grad = None
    fn().backward()
    worst, worst_name = 0.0, ""
    for name, t in named.items():
        grad = t.grad if t.grad is not None else torch.zeros_like(t)
        scale = max(grad.abs().max().item(), 1e-8)
        for _ in range(picks_per_tensor):
            i = int(torch.randint(t.numel(), (1,), generator=gen))
            fd = finite_difference(fn, t, i)
            err = abs(fd - grad.view(-1)[i].item()) / scale
            if err > worst:
                worst, worst_name = err, f"{name}[{i}]"
    check.expect(worst < 1e-5, f"{label}: autograd vs finite differences, worst relative error {worst:.2e} ({worst_name})")


def selfcheck_closed_form(check):
    """Losses with a known value: orthonormal embeddings, where every q.k is 1 (positive) or 0."""
    N, s = 5, 7.0
    e = torch.eye(N, dtype=torch.float64)
    positive = torch.arange(N)
    got = info_nce(e, e, positive, torch.tensor(s, dtype=torch.float64), None, 2.0, None).item()
    want = math.log(math.exp(s) + N - 1) - s
    check.expect(abs(got - want) < 1e-12, f"InfoNCE of orthonormal rows: {got:.12f} == {want:.12f}")
    cats = torch.tensor([0, 0, 0, 1, 1])  # rows 0-2 have 2 hard negatives, rows 3-4 one
    hard = hard_mask(cats, cats, positive)
    got = info_nce(e, e, positive, torch.tensor(s, dtype=torch.float64), hard, 2.0, None).item()
    ce = lambda h: math.log(math.exp(s) + 2 * h + (N - 1 - h)) - s  # noqa: E731
    want = (3 * ce(2) + 2 * ce(1)) / 5
    check.expect(abs(got - want) < 1e-12, f"InfoNCE with hard negatives counted twice: {got:.12f} == {want:.12f}")
    w = filter_weights(e, e, positive, hard, 10.0, 0.6, 0.2)
    want_w = min(1.0, 1 / (1 + math.exp(-10 * 0.8)) / 0.6)
    check.expect(bool(torch.allclose(w, torch.full((N,), want_w, dtype=torch.float64))), f"filtering weights {w.tolist()} == {want_w}")
    # a close negative: q.k_pos - hardest = 0.1 < margin: phi = sigmoid(10 (0.1 - 0.2)) < threshold -> down-weighted
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)]], dtype=torch.float64)
    w = filter_weights(q, k, torch.tensor([0]), torch.zeros(1, 2, dtype=torch.bool), 10.0, 0.6, 0.2)
    want_w = 1 / (1 + math.exp(1.0)) / 0.6
    check.expect(abs(w.item() - want_w) < 1e-12, f"filtering a close negative: {w.item():.12f} == {want_w:.12f}")
    one = filter_weights(q, q, torch.tensor([0]), torch.zeros(1, 1, dtype=torch.bool), 10.0, 0.6, 0.2)
    check.expect(one.item() == 1.0, "a query without negatives keeps weight 1")
    ls = torch.tensor([5.0], dtype=torch.float64, requires_grad=True)
    scale_value(ls, 100.0).backward()
    check.expect(ls.grad.item() == 0.0 and abs(scale_value(ls, 100.0).item() - 100) < 1e-9,
                 "logit_scale above ln(100): s = 100 and no gradient")
    adv = group_advantages([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0], 4)
    std = math.sqrt(1.25)
    want_adv = [(-1.5) / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 1.5 / (std + 1e-4), 0, 0, 0, 0]
    check.expect(all(abs(a - b) < 1e-12 for a, b in zip(adv.tolist(), want_adv)), f"group advantages {adv.tolist()}")
    sp = DEFAULT_SPECIAL
    cases = [([20, 21, 6], 1.0), ([6], 0.0), ([20, 21], 0.0), ([20, 5, 6], 0.0), ([20, 0, 6], 0.0), ([20, 8, 6], 0.0)]
    check.expect(all(format_reward(t, sp) == want for t, want in cases), "format reward of six rollouts")


def selfcheck(args):
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    check = Checker()
    selfcheck_closed_form(check)
    gen = torch.Generator().manual_seed(3)
    cfg = moon_twin.load_named_config("tiny")
    cfg["vision"].update(hidden=32, layers=2, heads=2, mlp=48)
    cfg["decoder"].update(hidden=32, layers=2, heads=4, kv_heads=2, mlp=40, vocab=64)
    cfg["moe"].update(enabled=True, mlp=24)
    cfg["fusion"].update(enabled=True, width=32, heads=2)
    cfg["fire"].update(enabled=True, vision_layers=[1, 2], decoder_layers=[0, 1])
    cfg["projector"]["hidden"] = 32
    cfg["embedding"]["dim"] = 16
    params = random_params(cfg, gen, torch.float64)
    twin = Twin(cfg, params)
    S = cfg["vision"]["image_size"]
    images = torch.randn(6, 3, S, S, generator=gen)
    images2 = images + 0.1 * torch.randn(6, 3, S, S, generator=gen)
    text = lambda n: torch.randint(9, 64, (n,), generator=gen).tolist()  # noqa: E731
    products = [(text(4), True), (text(3), True), ([], True), (text(5), False), (text(2), True), (text(6), True)]
    views, prods = synthetic_views(cfg, products, images, images2)
    category = torch.tensor([0, 1, 0, 1, 0, 0])
    opt = dict(DEFAULT_OPTIONS, margin=0.1, matryoshka_dims=[4, 8], aux_weight=0.01, chunk=2, frozen_weights={})
    logit_scale = torch.tensor([math.log(1 / 0.07)], requires_grad=True)

    def con():
        emb, aux = embed_views(twin, views, opt["chunk"])
        return contrastive_loss(emb, prods, category, logit_scale, aux, opt)["total"]

    picked = {n: params[n] for n in ("model.embed_tokens.weight", "model.layers.0.mlp.gate.weight",
                                       "model.layers.1.mlp.experts.2.up_proj.weight", "fire.0.gate",
                                       "fusion.visual_v_proj.weight", "fusion.gate_proj.bias", "head.proj.weight",
                                       "vision_model.encoder.layers.0.self_attn.q_proj.weight", "projector.linear_2.bias")}
    picked["logit_scale"] = logit_scale
    emb, aux = embed_views(twin, views, opt["chunk"])
    kept = contrastive_loss(emb, prods, category, logit_scale, aux, opt)["kept_fraction"].item()
    check.expect(kept < 1, f"filtering down-weights some queries here (kept fraction {kept:.3f})")
    check_gradients(check, "L_con (MoE, fusion, FIRE, Matryoshka, filtering, chunks of 2)", con, picked, 3, gen)

    # GRPO: 2 anchors x 2 rollouts against a reference with other parameters
    ref = Twin(cfg, {n: (t.detach() + 0.02 * torch.randn(t.shape, generator=gen)) for n, t in params.items()})
    rollouts = [text(3) + [6], text(2), [6], text(4) + [6]]
    rows = [(products[a][0], a, r[:-1] if r and r[-1] == 6 else r) for a, r in zip([0, 0, 1, 1], rollouts)]
    batch = assemble(cfg, rows, images)
    mask = scored_mask(batch, rollouts, DEFAULT_SPECIAL)
    check.expect(mask.sum(dim=1).tolist() == [4, 2, 1, 5], f"scored tokens per rollout {mask.sum(dim=1).tolist()}")
    advantages = group_advantages([0.3, -0.1, 0.5, 0.2], 2)
    with torch.no_grad():
        ref_lp = token_logprobs(ref, batch)
        old = token_logprobs(twin, batch)

    def pg():
        lp = token_logprobs(twin, batch)
        return policy_loss(lp, old, ref_lp, mask, advantages, 0.2, 0.04)[0]

    check_gradients(check, "L_pg (reference differs, fixed old log-probs)", pg, picked, 3, gen)
    same = policy_loss(old, old, old, mask, advantages, 0.2, 0.04)
    check.expect(abs(same[0].item() + (advantages.mean().item())) < 1e-12 and same[1].item() == 0,
                 f"L_pg with the reference equal to the policy is -mean(A) = {same[0].item():.3e}, kl 0")
    print(f"selfcheck: {check.failures} failure(s)")
    sys.exit(1 if check.failures else 0)


# ---------------------------------------------------------------------------------------------------------
# bench: one training step per call.

def cmd_bench(args):
    torch.set_num_threads(args.threads)
    cfg = moon_twin.load_named_config(args.config)
    gen = torch.Generator().manual_seed(0)
    params = {}
    for name, (shape, kind) in moon_twin.param_shapes(cfg).items():
        t = torch.randn(shape, generator=gen) * 0.02 if kind == "w" else (torch.ones(shape) if kind == "one" else torch.zeros(shape))
        params[name] = t.requires_grad_(True)
    twin = Twin(cfg, params, args.dtype == "bf16", fast=True)
    S = cfg["vision"]["image_size"]
    B, L = args.batch, args.text_len
    images = torch.randn(B, 3, S, S, generator=gen)
    images2 = torch.randn(B, 3, S, S, generator=gen)
    products = [(torch.randint(16, cfg["decoder"]["vocab"], (L,), generator=gen).tolist(), True) for _ in range(B)]
    views, prods = synthetic_views(cfg, products, images, images2)
    category = torch.arange(B) % 8
    logit_scale = torch.tensor([math.log(1 / 0.07)], requires_grad=True)
    opt = dict(DEFAULT_OPTIONS, matryoshka_dims=list(cfg["embedding"]["matryoshka"]),
               aux_weight=cfg["moe"]["aux_weight"] if cfg["moe"]["enabled"] else 0.0)
    decay = [t for t in params.values() if t.dim() >= 2]
    no_decay = [t for t in params.values() if t.dim() < 2] + [logit_scale]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-4, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    everything = list(params.values()) + [logit_scale]

    def step():
        optimizer.zero_grad(set_to_none=True)
        emb, aux = embed_views(twin, views, 0)
        contrastive_loss(emb, prods, category, logit_scale, aux, opt)["total"].backward()
        torch.nn.utils.clip_grad_norm_(everything, 1.0)
        optimizer.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    rows = {x: list(b["token_ids"].shape) for x, b in views.items()}
    print(json.dumps({"impl": "torch-twin", "torch": torch.__version__, "config": cfg["name"], "batch": B,
                      "text_len": L, "threads": args.threads, "dtype": args.dtype, "view_shapes": rows,
                      "step_ms": times, "median_ms": statistics.median(times),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "blas": moon_twin.blas_info()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("loss", help="L_con, L_pg, their parts and every gradient")
    lo.add_argument("--ckpt", required=True, action="append")
    lo.add_argument("--inputs", required=True, action="append")
    lo.add_argument("--out", required=True, action="append")
    lo.add_argument("--ref", action="append")
    sub.add_parser("selfcheck", help="finite differences and closed-form losses")
    b = sub.add_parser("bench", help="contrastive training step times and peak RSS, one JSON line")
    b.add_argument("--config", default="small")
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--text-len", type=int, default=24)
    b.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    args = ap.parse_args()
    torch.manual_seed(0)
    {"loss": cmd_loss, "selfcheck": selfcheck, "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    main()
