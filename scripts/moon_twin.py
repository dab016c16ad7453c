#!/usr/bin/python3
"""moon_twin.py: the MOON3.0 model of docs/model.md in plain PyTorch, written from the spec alone.

It is the second, independent implementation the parity tests compare moon's C++ model with, tensor by
tensor (docs/parity.md). Subcommands:

  forward   --weights W.safetensors --batch BATCH.safetensors --out OUT.safetensors [--dtype f32|bf16]
            embedding, hidden, pooled, aux_loss, loss (docs/model.md section 10) and grad.<param> for every
            parameter, all f32. --weights/--batch/--out may repeat (in order) to run many cases at one start.
  generate  --weights W --batch PROMPT.safetensors --steps 32 --out TOKENS.safetensors [--dtype f32|bf16]
            greedy decoding, recomputing the whole sequence at every step (no KV cache): "tokens" (B, steps) i64.
  export-hf --weights W --out DIR
            the vision encoder and decoder in Hugging Face layout (bf16): DIR/vision/{config.json,
            model.safetensors}, DIR/decoder/{config.json, model-0000{1,2}-of-00002.safetensors,
            model.safetensors.index.json}.
  bench     --config tiny|small|base|PATH --batch B --threads N --dtype f32|bf16 [--text-len L]
            times forward and forward+backward on a synthetic image+text batch; prints one JSON line.

W is a moon checkpoint: safetensors with the config JSON in the metadata key "moon.config".
BATCH holds the ModelBatch tensors of model/inputs.h by name.
"""
import argparse
import json
import math
import os
import re
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_tool import read_safetensors, write_safetensors  # noqa: E402  (ours: struct + json + numpy)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------------------
# Config: the defaults of model/config.h, overlaid with a JSON document (a shipped config or moon.config).

DEFAULTS = {
    "name": "custom",
    "vision": {"style": "siglip", "image_size": 32, "patch_size": 8, "hidden": 128, "layers": 4, "heads": 4,
               "mlp": 512, "act": "gelu_tanh", "layer_norm_eps": 1e-6},
    "projector": {"merge": 2, "hidden": 256},
    "decoder": {"vocab": 512, "hidden": 128, "layers": 4, "heads": 4, "kv_heads": 2, "mlp": 384,
                "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_embeddings": True},
    "moe": {"enabled": False, "experts": 4, "top_k": 2, "mlp": None, "aux_weight": 0.01},
    "fusion": {"enabled": False, "heads": 4, "width": 128},
    "fire": {"enabled": False, "vision_layers": [1, 2, 3], "decoder_layers": [1, 2, 3]},
    "embedding": {"pooling": "mean", "dim": 256, "matryoshka": [], "architecture": "mllm"},
    "init_seed": 0,
}


def parse_config(text):
    """JSON text -> a complete config dict (sections filled with the C++ defaults)."""
    given = json.loads(text)
    cfg = {}
    for key, default in DEFAULTS.items():
        if isinstance(default, dict):
            cfg[key] = dict(default)
            cfg[key].update(given.get(key, {}))
        else:
            cfg[key] = given.get(key, default)
    if cfg["moe"]["mlp"] is None:
        cfg["moe"]["mlp"] = cfg["decoder"]["mlp"]  # an expert defaults to the dense MLP's width
    return cfg


def load_named_config(name_or_path):
    """tiny / small / base (configs/*.json) or the path of a JSON file."""
    path = name_or_path
    if "/" not in name_or_path and not name_or_path.endswith(".json"):
        path = os.path.join(REPO, "configs", name_or_path + ".json")
    if not os.path.exists(path):
        sys.exit(f"moon_twin: no config {name_or_path!r} (looked for {path})")
    with open(path) as f:
        return parse_config(f.read())


# ---------------------------------------------------------------------------------------------------------
# safetensors in and out (through scripts/safetensors_tool.py).

def load_tensors(path):
    """-> ({name: torch tensor (f32 or i64)}, metadata)."""
    raw, metadata = read_safetensors(path)
    out = {}
    for name, (dtype, array) in raw.items():
        if dtype in ("F32", "F16", "BF16", "F64"):
            out[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        else:
            out[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    return out, metadata


def to_record(name, tensor):
    """A torch tensor -> (name, dtype, shape, bytes) for write_safetensors (f32, bf16 or i64)."""
    t = tensor.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return name, "BF16", list(t.shape), t.view(torch.int16).numpy().tobytes()
    if t.dtype in (torch.int64, torch.int32):
        return name, "I64", list(t.shape), t.to(torch.int64).numpy().astype("<i8").tobytes()
    return name, "F32", list(t.shape), t.to(torch.float32).numpy().astype("<f4").tobytes()


def save_tensors(path, named, metadata=None):
    write_safetensors(path, [to_record(n, t) for n, t in named], metadata or {})


# ---------------------------------------------------------------------------------------------------------
# Building blocks.

def masked_attention(q, k, v, key_ok, scale):
    """softmax(scale q k^T) v over the keys where key_ok (broadcastable to (B, H, Tq, Tk)) is true; a query
    with no allowed key gets zeros (and no NaN in its gradient). GQA: k, v have Hkv heads, repeated so that
    query head h reads kv head h // (H / Hkv)."""
    heads, kv_heads = q.shape[1], k.shape[1]
    if kv_heads != heads:
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale        # (B, H, Tq, Tk)
    key_ok = key_ok.expand_as(scores)
    scores = scores.masked_fill(~key_ok, -1e30)
    shift = scores.amax(dim=-1, keepdim=True).detach()
    weights = torch.exp(scores - shift) * key_ok                   # exactly 0 on masked keys
    denom = weights.sum(dim=-1, keepdim=True)
    weights = weights / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.matmul(weights, v)                                # (B, H, Tq, D)


class Bf16Product(torch.autograd.Function):
    """x w^T with both operands rounded to bf16 (x.bfloat16().float()) and f32 accumulation, as moon's bf16
    compute mode does. Its backward mirrors moon's too (ops/matmul.h): the incoming gradient is rounded to
    bf16 once, and dx = g w, dw = g^T x use the rounded operands; the results stay f32."""

    @staticmethod
    def forward(ctx, x, w):
        xr, wr = x.bfloat16().float(), w.bfloat16().float()
        ctx.save_for_backward(xr, wr)
        return torch.matmul(xr, wr.t())

    @staticmethod
    def backward(ctx, grad):
        xr, wr = ctx.saved_tensors
        g = grad.bfloat16().float()
        dx = torch.matmul(g, wr)
        dw = torch.matmul(g.reshape(-1, g.shape[-1]).t(), xr.reshape(-1, xr.shape[-1]))
        return dx, dw


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def layer_norm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def activation(name, x):
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    return F.gelu(x)  # erf


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, positions, theta):
    """x (B, H, T, D), positions (B, T) i64: the rotate-half rotary embedding of Qwen2."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)        # (D/2)
    angles = positions.to(torch.float64)[..., None] * inv_freq                   # (B, T, D/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]                         # (B, 1, T, D)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + rotate_half(x) * sin


def merge_patches(u, m):
    """(Bi, N, c) -> (Bi, N/m^2, m^2 c): 2x2 neighbours concatenated in (0,0), (0,1), (1,0), (1,1) order."""
    if m == 1:
        return u
    bi, n, c = u.shape
    g = math.isqrt(n)
    u = u.reshape(bi, g // 2, 2, g // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    return u.reshape(bi, n // 4, 4 * c)


def pick_rows(table, slots):
    """table (R, C), slots (...) i64 with -1 for none -> (..., C) rows (row 0 where slot is -1)."""
    flat = slots.clamp_min(0).reshape(-1)
    return table.index_select(0, flat).reshape(*slots.shape, table.shape[-1])


# ---------------------------------------------------------------------------------------------------------
# The model.

class Twin:
    def __init__(self, cfg, params, bf16=False, fast=False):
        self.cfg = cfg
        self.p = params      # name -> f32 leaf tensor
        self.bf16 = bf16
        # fast (benchmarks only): bf16 products as real bf16 GEMMs (torch's oneDNN path) instead of the
        # rounding emulation, and MoE experts run only on the tokens routed to them (as moon does)
        self.fast = fast

    def lin(self, x, w, b=None):
        """linear(x, w, b) = x w^T + b; in bf16 mode through Bf16Product (operands rounded to bf16)."""
        if self.bf16 and self.fast:
            y = torch.matmul(x.to(torch.bfloat16), w.to(torch.bfloat16).t()).float()
        else:
            y = Bf16Product.apply(x, w) if self.bf16 else torch.matmul(x, w.t())
        return y if b is None else y + b

    def proj(self, x, prefix, bias=True):
        return self.lin(x, self.p[prefix + ".weight"], self.p[prefix + ".bias"] if bias else None)

    # ---- section 2: vision encoder -> (features (Bi, N, Cv), [x_1 .. x_L] each (Bi, N, Cv))
    def vision(self, pixels):
        vc, p = self.cfg["vision"], self.p
        pre = "vision_model."
        clip = vc["style"] == "clip"
        bi, _, side, _ = pixels.shape
        ps, cv = vc["patch_size"], vc["hidden"]
        g_new, g = side // ps, vc["image_size"] // ps
        patches = pixels.reshape(bi, 3, g_new, ps, g_new, ps).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(bi, g_new * g_new, 3 * ps * ps)           # (c, py, px) per patch
        w = p[pre + "embeddings.patch_embedding.weight"].reshape(cv, -1)
        x = self.lin(patches, w, None if clip else p[pre + "embeddings.patch_embedding.bias"])
        pos = p[pre + "embeddings.position_embedding.weight"]
        grid_pos = pos[1:] if clip else pos
        if g_new != g:
            grid = grid_pos.reshape(g, g, cv).permute(2, 0, 1)[None]
            grid = F.interpolate(grid, size=(g_new, g_new), mode="bicubic", align_corners=False)
            grid_pos = grid[0].permute(1, 2, 0).reshape(g_new * g_new, cv)
        if clip:
            cls = p[pre + "embeddings.class_embedding"].reshape(1, 1, cv).expand(bi, 1, cv)
            x = torch.cat([cls, x], dim=1)
            x = x + torch.cat([pos[:1], grid_pos], dim=0)
            x = layer_norm(x, p[pre + "pre_layrnorm.weight"], p[pre + "pre_layrnorm.bias"], vc["layer_norm_eps"])
        else:
            x = x + grid_pos
        heads, eps = vc["heads"], vc["layer_norm_eps"]
        hd = cv // heads
        outputs = []
        for i in range(vc["layers"]):
            lp = f"{pre}encoder.layers.{i}."
            a = layer_norm(x, p[lp + "layer_norm1.weight"], p[lp + "layer_norm1.bias"], eps)
            L = a.shape[1]
            q, k, v = (self.proj(a, lp + f"self_attn.{n}_proj").reshape(bi, L, heads, hd).transpose(1, 2)
                       for n in "qkv")
            every = torch.ones(1, 1, 1, L, dtype=torch.bool)
            o = masked_attention(q, k, v, every, 1.0 / math.sqrt(hd)).transpose(1, 2).reshape(bi, L, cv)
            h = x + self.proj(o, lp + "self_attn.out_proj")
            y = layer_norm(h, p[lp + "layer_norm2.weight"], p[lp + "layer_norm2.bias"], eps)
            x = h + self.proj(activation(vc["act"], self.proj(y, lp + "mlp.fc1")), lp + "mlp.fc2")
            outputs.append(x[:, 1:] if clip else x)
        feats = layer_norm(x, p[pre + "post_layernorm.weight"], p[pre + "post_layernorm.bias"], eps)
        return (feats[:, 1:] if clip else feats), outputs

    # ---- section 3
    def projector(self, features):
        m = self.cfg["projector"]["merge"]
        h = F.gelu(self.proj(merge_patches(features, m), "projector.linear_1"))
        return self.proj(h, "projector.linear_2")

    # ---- section 6: r_j (Bi, M, C) for every pair
    def fire_features(self, layer_outputs):
        m, eps = self.cfg["projector"]["merge"], self.cfg["vision"]["layer_norm_eps"]
        out = []
        for j, l in enumerate(self.cfg["fire"]["vision_layers"]):
            n = layer_norm(layer_outputs[l - 1], self.p[f"fire.{j}.norm.weight"], self.p[f"fire.{j}.norm.bias"], eps)
            out.append(self.proj(merge_patches(n, m), f"fire.{j}.proj"))
        return out

    # ---- section 5: returns (out (B, T, C), aux ())
    def moe(self, y, layer, modality, keep):
        mc, p = self.cfg["moe"], self.p
        pre = f"model.layers.{layer}.mlp."
        n_exp, k = mc["experts"], mc["top_k"]
        mod = p[pre + "modality_embedding.weight"][modality][:, None, :]         # (B, 1, C)
        probs = torch.softmax(self.lin(y + mod, p[pre + "gate.weight"]), dim=-1)  # (B, T, E)
        # top k, ties to the lower expert index: a stable descending sort keeps equal values in index order
        chosen = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices[..., :k]  # (B, T, k)
        picked = probs.gather(-1, chosen)
        weights = picked / picked.sum(dim=-1, keepdim=True)                      # (B, T, k)
        onehot = F.one_hot(chosen, n_exp).to(y.dtype)                            # (B, T, k, E)
        per_expert = (weights[..., None] * onehot).sum(dim=-2)                   # (B, T, E)
        out = torch.zeros_like(y)
        if self.fast:  # grouped: each expert sees only its tokens
            flat_y, flat_w = y.reshape(-1, y.shape[-1]), per_expert.reshape(-1, n_exp)
            routed = onehot.sum(dim=-2).reshape(-1, n_exp) > 0                   # (B*T, E)
            flat_out = torch.zeros_like(flat_y)
            for e in range(n_exp):
                ep = f"{pre}experts.{e}."
                rows = routed[:, e].nonzero().squeeze(1)
                ye = flat_y.index_select(0, rows)
                h = F.silu(self.lin(ye, p[ep + "gate_proj.weight"])) * self.lin(ye, p[ep + "up_proj.weight"])
                part = flat_w.index_select(0, rows)[:, e:e + 1] * self.lin(h, p[ep + "down_proj.weight"])
                flat_out = flat_out.index_add(0, rows, part)
            out = flat_out.reshape(y.shape)
        for e in range(0 if self.fast else n_exp):
            ep = f"{pre}experts.{e}."
            h = F.silu(self.lin(y, p[ep + "gate_proj.weight"])) * self.lin(y, p[ep + "up_proj.weight"])
            out = out + per_expert[..., e:e + 1] * self.lin(h, p[ep + "down_proj.weight"])
        kept = keep.to(y.dtype)[..., None]                                       # (B, T, 1)
        n = kept.sum()
        f = (onehot.sum(dim=-2) * kept).sum(dim=(0, 1)) / (k * n)                # (E) share of assignments
        mean_p = (probs * kept).sum(dim=(0, 1)) / n                              # (E)
        return out, n_exp * (f * mean_p).sum()

    # ---- section 4: x (B, T, C) input embeddings -> (hidden (B, T, C), aux ())
    def decoder(self, x, positions, keep, modality, before_layer=None):
        dc, p = self.cfg["decoder"], self.p
        B, T, C = x.shape
        heads, kv_heads = dc["heads"], dc["kv_heads"]
        hd = C // heads
        eps = dc["rms_norm_eps"]
        keep_b = keep.bool()
        idx = torch.arange(T)
        causal = idx[None, :] <= idx[:, None]                                   # (Tq, Tk)
        key_ok = causal[None, None] & keep_b[:, None, None, :]                  # (B, 1, Tq, Tk)
        aux = []
        for l in range(dc["layers"]):
            if before_layer is not None:
                x = before_layer(l, x)
            lp = f"model.layers.{l}."
            a = rms_norm(x, p[lp + "input_layernorm.weight"], eps)
            q = self.proj(a, lp + "self_attn.q_proj").reshape(B, T, heads, hd).transpose(1, 2)
            k = self.proj(a, lp + "self_attn.k_proj").reshape(B, T, kv_heads, hd).transpose(1, 2)
            v = self.proj(a, lp + "self_attn.v_proj").reshape(B, T, kv_heads, hd).transpose(1, 2)
            q, k = apply_rope(q, positions, dc["rope_theta"]), apply_rope(k, positions, dc["rope_theta"])
            o = masked_attention(q, k, v, key_ok, 1.0 / math.sqrt(hd)).transpose(1, 2).reshape(B, T, C)
            h = x + self.lin(o, p[lp + "self_attn.o_proj.weight"])
            y = rms_norm(h, p[lp + "post_attention_layernorm.weight"], eps)
            if self.cfg["moe"]["enabled"]:
                mlp_out, layer_aux = self.moe(y, l, modality, keep)
                aux.append(layer_aux)
            else:
                gate = self.lin(y, p[lp + "mlp.gate_proj.weight"])
                up = self.lin(y, p[lp + "mlp.up_proj.weight"])
                mlp_out = self.lin(F.silu(gate) * up, p[lp + "mlp.down_proj.weight"])
            x = h + mlp_out
        hidden = rms_norm(x, p["model.norm.weight"], eps)
        aux_loss = torch.stack(aux).mean() if aux else torch.zeros(())
        return hidden, aux_loss

    def lm_weight(self):
        return self.p["model.embed_tokens.weight" if self.cfg["decoder"]["tie_embeddings"] else "lm_head.weight"]

    # ---- section 4 inputs + section 6 hook
    def prepare(self, batch):
        """-> (inputs (B, T, C), raw token embeddings (B, T, C), features (Bi, N, Cv) or None, hook or None)"""
        embed = self.p["model.embed_tokens.weight"]
        token_embeds = embed[batch["token_ids"]]                                   # (B, T, C)
        pixels = batch.get("pixels")
        if pixels is None or pixels.shape[0] == 0:
            return token_embeds, token_embeds, None, None
        features, layer_outputs = self.vision(pixels)
        tokens = self.projector(features)                                          # (Bi, M, C)
        slots = batch["vision_slot"]
        at_vision = (slots >= 0)[..., None]
        C = tokens.shape[-1]
        inputs = torch.where(at_vision, pick_rows(tokens.reshape(-1, C), slots), token_embeds)
        hook = None
        if self.cfg["fire"]["enabled"]:
            r = self.fire_features(layer_outputs)
            pairs = list(enumerate(self.cfg["fire"]["decoder_layers"]))

            def hook(layer, x):
                for j, d in pairs:
                    if d == layer:
                        add = self.p[f"fire.{j}.gate"] * pick_rows(r[j].reshape(-1, C), slots)
                        x = x + torch.where(at_vision, add, torch.zeros_like(add))
                return x
        return inputs, token_embeds, features, hook

    # ---- section 8: f (B, D)
    def fusion(self, s, features, batch, token_embeds):
        fc, vc = self.cfg["fusion"], self.cfg["vision"]
        B = s.shape[0]
        heads, width = fc["heads"], fc["width"]
        dh = width // heads
        has_image = batch["has_image"].bool()                                      # (B)
        if features is None:
            rows = torch.zeros(B, vc["image_size"] ** 2 // vc["patch_size"] ** 2, vc["hidden"])
        else:
            picked = features.index_select(0, batch["image_row"].clamp_min(0))
            rows = torch.where(has_image[:, None, None], picked, torch.zeros_like(picked))
        text_ok = batch["text_mask"].bool()                                         # (B, T)
        has_text = text_ok.any(dim=1)

        def split(t):  # (B, L, F) -> (B, Hf, L, dh)
            return t.reshape(B, t.shape[1], heads, dh).transpose(1, 2)

        q = self.proj(s, "fusion.q_proj").reshape(B, heads, 1, dh)
        scale = 1.0 / math.sqrt(dh)
        o_v = masked_attention(q, split(self.proj(rows, "fusion.visual_k_proj")),
                               split(self.proj(rows, "fusion.visual_v_proj")), has_image[:, None, None, None], scale)
        o_t = masked_attention(q, split(self.proj(token_embeds, "fusion.text_k_proj")),
                               split(self.proj(token_embeds, "fusion.text_v_proj")), text_ok[:, None, None, :], scale)
        o_s = self.proj(s, "fusion.summary_proj").reshape(B, heads, dh)
        logits = self.proj(s, "fusion.gate_proj").reshape(B, heads, 3)
        absent = torch.stack([torch.zeros_like(has_image), ~has_image, ~has_text], dim=-1)[:, None, :]  # (B, 1, 3)
        g = torch.softmax(logits.masked_fill(absent, float("-inf")), dim=-1)
        mixed = g[..., 0:1] * o_s + g[..., 1:2] * o_v[:, :, 0] + g[..., 2:3] * o_t[:, :, 0]   # (B, Hf, dh)
        return self.proj(mixed.reshape(B, width), "fusion.out_proj")

    # ---- section 11: the dual-encoder baseline (text tower through the decoder, image tower on its own)
    def forward_dual(self, batch):
        B, T = batch["token_ids"].shape
        slots = batch["vision_slot"]
        ar = torch.arange(T)[None, :].expand(B, T)
        has_slots = (slots >= 0).any(dim=1, keepdim=True)
        first = torch.where(slots >= 0, ar, torch.full_like(ar, T)).min(dim=1, keepdim=True).values
        last = torch.where(slots >= 0, ar, torch.full_like(ar, -1)).max(dim=1, keepdim=True).values
        span = has_slots & (ar >= first - 1) & (ar <= last + 1)       # <image> v.. </image>
        keep = batch["keep"].bool() & ~span
        pool_mask = batch["pool_mask"].bool() & ~span
        positions = torch.where(keep, keep.long().cumsum(dim=1) - 1, torch.zeros_like(ar))
        embeds = self.p["model.embed_tokens.weight"][batch["token_ids"]]
        hidden, aux = self.decoder(embeds, positions, keep.to(torch.uint8), torch.zeros(B, dtype=torch.long), None)
        if self.cfg["embedding"]["pooling"] == "mean":
            mask = pool_mask.to(hidden.dtype)[..., None]
            s = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
        else:
            s = hidden[torch.arange(B), batch["emb_index"]]
        unit = lambda z: z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        z = unit(self.proj(s, "head.proj")) * (batch["modality"] != 1).to(s.dtype)[:, None]
        pixels = batch.get("pixels")
        if pixels is not None and pixels.shape[0] > 0:
            features, _ = self.vision(pixels)
            image = unit(self.proj(features.mean(dim=1), "head.image_proj"))      # (Bi, D)
            picked = image.index_select(0, batch["image_row"].clamp_min(0))
            z = z + torch.where((batch["image_row"] >= 0)[:, None], picked, torch.zeros_like(picked))
        return {"embedding": unit(z), "pooled": s, "hidden": hidden, "aux_loss": aux}

    # ---- the whole forward: dict of embedding, pooled, hidden, aux_loss
    def forward(self, batch):
        if self.cfg["embedding"].get("architecture", "mllm") == "dual":
            return self.forward_dual(batch)
        B = batch["token_ids"].shape[0]
        inputs, token_embeds, features, hook = self.prepare(batch)
        hidden, aux = self.decoder(inputs, batch["positions"], batch["keep"], batch["modality"], hook)
        if self.cfg["embedding"]["pooling"] == "mean":
            mask = batch["pool_mask"].to(hidden.dtype)[..., None]
            s = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        else:
            s = hidden[torch.arange(B), batch["emb_index"]]
        z = self.proj(s, "head.proj")
        if self.cfg["fusion"]["enabled"]:
            z = z + self.fusion(s, features, batch, token_embeds)
        e = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return {"embedding": e, "pooled": s, "hidden": hidden, "aux_loss": aux}

    # ---- section 10
    def parity_loss(self, out):
        e = out["embedding"]
        half = e.shape[0] // 2
        logits = torch.matmul(e[:half], e[half:].t()) / 0.05
        loss = F.cross_entropy(logits, torch.arange(half))
        if self.cfg["moe"]["enabled"]:
            loss = loss + self.cfg["moe"]["aux_weight"] * out["aux_loss"]
        return loss


def load_model(weights, bf16):
    tensors, metadata = load_tensors(weights)
    if "moon.config" not in metadata:
        sys.exit(f"moon_twin: {weights} has no moon.config metadata (write it with save_checkpoint)")
    cfg = parse_config(metadata["moon.config"])
    params = {n: t.float().requires_grad_(True) for n, t in tensors.items()}
    return Twin(cfg, params, bf16), tensors


def load_batch(path):
    batch, _ = load_tensors(path)
    for name in ("keep", "pool_mask", "text_mask", "has_image"):
        batch[name] = batch[name].to(torch.uint8)
    return batch


# ---------------------------------------------------------------------------------------------------------
# Subcommands.

def cmd_forward(args):
    for weights, batch_path, out_path in jobs(args):
        twin, _ = load_model(weights, args.dtype == "bf16")
        batch = load_batch(batch_path)
        out = twin.forward(batch)
        loss = twin.parity_loss(out)
        loss.backward()
        named = [(k, out[k]) for k in ("embedding", "hidden", "pooled", "aux_loss")] + [("loss", loss)]
        for name, t in twin.p.items():
            named.append(("grad." + name, t.grad if t.grad is not None else torch.zeros_like(t)))
        save_tensors(out_path, named)


def jobs(args):
    """The (weights, batch, out) triples: --weights/--batch/--out may repeat (one torch start for many runs)."""
    if not (len(args.weights) == len(args.batch) == len(args.out)):
        sys.exit("moon_twin: give as many --weights as --batch and --out (they pair up in order)")
    return zip(args.weights, args.batch, args.out)


def cmd_generate(args):
    for weights, batch_path, out_path in jobs(args):
        generate_one(weights, batch_path, out_path, args)


def generate_one(weights, batch_path, out_path, args):
    twin, _ = load_model(weights, args.dtype == "bf16")
    batch = load_batch(batch_path)
    B = batch["token_ids"].shape[0]
    pad = 8
    # each row's kept positions, in order (so left- or right-padded prompts both work)
    rows = []
    for b in range(B):
        kept = batch["keep"][b].bool()
        rows.append({"ids": batch["token_ids"][b][kept].tolist(), "slots": batch["vision_slot"][b][kept].tolist()})
    produced = [[] for _ in range(B)]
    with torch.no_grad():
        for _ in range(args.steps):
            T = max(len(r["ids"]) for r in rows)
            token_ids = torch.full((B, T), pad, dtype=torch.int64)
            slots = torch.full((B, T), -1, dtype=torch.int64)
            keep = torch.zeros(B, T, dtype=torch.uint8)
            positions = torch.zeros(B, T, dtype=torch.int64)
            for b, r in enumerate(rows):
                L = len(r["ids"])
                token_ids[b, :L] = torch.tensor(r["ids"])
                slots[b, :L] = torch.tensor(r["slots"])
                keep[b, :L] = 1
                positions[b, :L] = torch.arange(L)
            step = dict(batch, token_ids=token_ids, vision_slot=slots, keep=keep, positions=positions)
            inputs, _, _, hook = twin.prepare(step)
            hidden, _ = twin.decoder(inputs, positions, keep, batch["modality"], hook)
            last = hidden[torch.arange(B), torch.tensor([len(r["ids"]) - 1 for r in rows])]   # (B, C)
            logits = twin.lin(last, twin.lm_weight())                                                         # (B, V)
            nxt = torch.argmax(logits, dim=-1)  # the first maximal index: ties go to the lowest id
            for b in range(B):
                rows[b]["ids"].append(int(nxt[b]))
                rows[b]["slots"].append(-1)
                produced[b].append(int(nxt[b]))
    save_tensors(out_path, [("tokens", torch.tensor(produced, dtype=torch.int64).reshape(B, args.steps))])


def vision_hf_config(cfg):
    vc = cfg["vision"]
    act = {"gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu", "gelu": "gelu"}[vc["act"]]
    siglip = vc["style"] == "siglip"
    return {
        "architectures": ["SiglipVisionModel" if siglip else "CLIPVisionModel"],
        "model_type": "siglip_vision_model" if siglip else "clip_vision_model",
        "hidden_size": vc["hidden"],
        "intermediate_size": vc["mlp"],
        "num_hidden_layers": vc["layers"],
        "num_attention_heads": vc["heads"],
        "num_channels": 3,
        "image_size": vc["image_size"],
        "patch_size": vc["patch_size"],
        "hidden_act": act,
        "layer_norm_eps": vc["layer_norm_eps"],
        "attention_dropout": 0.0,
        "torch_dtype": "bfloat16",
    }


def decoder_hf_config(cfg):
    dc, mc = cfg["decoder"], cfg["moe"]
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": dc["vocab"],
        "hidden_size": dc["hidden"],
        "intermediate_size": mc["mlp"] if mc["enabled"] else dc["mlp"],
        "num_hidden_layers": dc["layers"],
        "num_attention_heads": dc["heads"],
        "num_key_value_heads": dc["kv_heads"],
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rope_theta": dc["rope_theta"],
        "rms_norm_eps": dc["rms_norm_eps"],
        "tie_word_embeddings": bool(dc["tie_embeddings"]),
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "torch_dtype": "bfloat16",
    }


def siglip_head(cfg, seed):
    """The attention-pool head a SigLIP vision checkpoint carries (unused by moon), with its real shapes."""
    cv, mlp = cfg["vision"]["hidden"], cfg["vision"]["mlp"]
    gen = torch.Generator().manual_seed(seed)
    shapes = [("probe", (1, 1, cv)), ("attention.in_proj_weight", (3 * cv, cv)), ("attention.in_proj_bias", (3 * cv,)),
              ("attention.out_proj.weight", (cv, cv)), ("attention.out_proj.bias", (cv,)),
              ("layernorm.weight", (cv,)), ("layernorm.bias", (cv,)), ("mlp.fc1.weight", (mlp, cv)),
              ("mlp.fc1.bias", (mlp,)), ("mlp.fc2.weight", (cv, mlp)), ("mlp.fc2.bias", (cv,))]
    return [("vision_model.head." + n, torch.randn(s, generator=gen) * 0.02) for n, s in shapes]


def cmd_export_hf(args):
    tensors, metadata = load_tensors(args.weights)
    if "moon.config" not in metadata:
        sys.exit(f"moon_twin: {args.weights} has no moon.config metadata")
    cfg = parse_config(metadata["moon.config"])
    os.makedirs(os.path.join(args.out, "vision"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "decoder"), exist_ok=True)
    bf = lambda t: t.to(torch.bfloat16)  # noqa: E731  (round to nearest even)

    vision = [(n, bf(t)) for n, t in tensors.items() if n.startswith("vision_model.")]
    if cfg["vision"]["style"] == "siglip":
        vision += [(n, bf(t)) for n, t in siglip_head(cfg, cfg["init_seed"])]
    write_safetensors(os.path.join(args.out, "vision", "model.safetensors"), [to_record(n, t) for n, t in vision],
                      {"format": "pt"})
    with open(os.path.join(args.out, "vision", "config.json"), "w") as f:
        json.dump(vision_hf_config(cfg), f, indent=2)

    dc, moe = cfg["decoder"], cfg["moe"]["enabled"]
    order = ["model.embed_tokens.weight"]
    renames = {}
    for l in range(dc["layers"]):
        lp = f"model.layers.{l}."
        order += [lp + "input_layernorm.weight"]
        for n in "qkv":
            order += [lp + f"self_attn.{n}_proj.weight", lp + f"self_attn.{n}_proj.bias"]
        order += [lp + "self_attn.o_proj.weight", lp + "post_attention_layernorm.weight"]
        for n in ("gate_proj", "up_proj", "down_proj"):
            hf = lp + f"mlp.{n}.weight"
            order.append(hf)
            renames[hf] = lp + f"mlp.experts.0.{n}.weight" if moe else hf
    order.append("model.norm.weight")
    if not dc["tie_embeddings"]:
        order.append("lm_head.weight")
    decoder = [(n, bf(tensors[renames.get(n, n)])) for n in order]
    total = sum(t.numel() * 2 for _, t in decoder)
    shards, acc = ([], []), 0
    for n, t in decoder:
        shards[0 if acc < total / 2 or not shards[0] else 1].append((n, t))
        acc += t.numel() * 2
    if not shards[1]:  # a decoder of one tensor cannot happen, but keep both files non-empty
        shards[1].append(shards[0].pop())
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        write_safetensors(os.path.join(args.out, "decoder", fname), [to_record(n, t) for n, t in shard],
                          {"format": "pt"})
        weight_map.update({n: fname for n, _ in shard})
    with open(os.path.join(args.out, "decoder", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    with open(os.path.join(args.out, "decoder", "config.json"), "w") as f:
        json.dump(decoder_hf_config(cfg), f, indent=2)


# ---- bench: fresh random parameters of the right shapes (values do not change the time)

def param_shapes(cfg):
    """name -> (shape, kind) for every parameter of docs/model.md; kind: w (weight), b (bias), one, zero."""
    vc, pc, dc, mc, fc = cfg["vision"], cfg["projector"], cfg["decoder"], cfg["moe"], cfg["fusion"]
    cv, C, m2 = vc["hidden"], dc["hidden"], pc["merge"] ** 2
    n = (vc["image_size"] // vc["patch_size"]) ** 2
    clip = vc["style"] == "clip"
    s = {}
    pre = "vision_model."
    s[pre + "embeddings.patch_embedding.weight"] = ((cv, 3, vc["patch_size"], vc["patch_size"]), "w")
    if not clip:
        s[pre + "embeddings.patch_embedding.bias"] = ((cv,), "b")
    else:
        s[pre + "embeddings.class_embedding"] = ((cv,), "w")
        s[pre + "pre_layrnorm.weight"], s[pre + "pre_layrnorm.bias"] = ((cv,), "one"), ((cv,), "b")
    s[pre + "embeddings.position_embedding.weight"] = ((n + clip, cv), "w")
    for i in range(vc["layers"]):
        lp = f"{pre}encoder.layers.{i}."
        for ln in ("layer_norm1", "layer_norm2"):
            s[lp + ln + ".weight"], s[lp + ln + ".bias"] = ((cv,), "one"), ((cv,), "b")
        for x in "qkv":
            s[lp + f"self_attn.{x}_proj.weight"], s[lp + f"self_attn.{x}_proj.bias"] = ((cv, cv), "w"), ((cv,), "b")
        s[lp + "self_attn.out_proj.weight"], s[lp + "self_attn.out_proj.bias"] = ((cv, cv), "w"), ((cv,), "b")
        s[lp + "mlp.fc1.weight"], s[lp + "mlp.fc1.bias"] = ((vc["mlp"], cv), "w"), ((vc["mlp"],), "b")
        s[lp + "mlp.fc2.weight"], s[lp + "mlp.fc2.bias"] = ((cv, vc["mlp"]), "w"), ((cv,), "b")
    s[pre + "post_layernorm.weight"], s[pre + "post_layernorm.bias"] = ((cv,), "one"), ((cv,), "b")
    s["projector.linear_1.weight"], s["projector.linear_1.bias"] = ((pc["hidden"], m2 * cv), "w"), ((pc["hidden"],), "b")
    s["projector.linear_2.weight"], s["projector.linear_2.bias"] = ((C, pc["hidden"]), "w"), ((C,), "b")
    kvc = dc["kv_heads"] * (C // dc["heads"])
    s["model.embed_tokens.weight"] = ((dc["vocab"], C), "w")
    for l in range(dc["layers"]):
        lp = f"model.layers.{l}."
        s[lp + "input_layernorm.weight"] = s[lp + "post_attention_layernorm.weight"] = ((C,), "one")
        s[lp + "self_attn.q_proj.weight"], s[lp + "self_attn.q_proj.bias"] = ((C, C), "w"), ((C,), "b")
        for x in "kv":
            s[lp + f"self_attn.{x}_proj.weight"], s[lp + f"self_attn.{x}_proj.bias"] = ((kvc, C), "w"), ((kvc,), "b")
        s[lp + "self_attn.o_proj.weight"] = ((C, C), "w")
        if mc["enabled"]:
            for e in range(mc["experts"]):
                ep = f"{lp}mlp.experts.{e}."
                s[ep + "gate_proj.weight"] = s[ep + "up_proj.weight"] = ((mc["mlp"], C), "w")
                s[ep + "down_proj.weight"] = ((C, mc["mlp"]), "w")
            s[lp + "mlp.gate.weight"] = ((mc["experts"], C), "w")
            s[lp + "mlp.modality_embedding.weight"] = ((3, C), "w")
        else:
            s[lp + "mlp.gate_proj.weight"] = s[lp + "mlp.up_proj.weight"] = ((dc["mlp"], C), "w")
            s[lp + "mlp.down_proj.weight"] = ((C, dc["mlp"]), "w")
    s["model.norm.weight"] = ((C,), "one")
    if not dc["tie_embeddings"]:
        s["lm_head.weight"] = ((dc["vocab"], C), "w")
    if cfg["fire"]["enabled"]:
        for j in range(len(cfg["fire"]["vision_layers"])):
            s[f"fire.{j}.norm.weight"], s[f"fire.{j}.norm.bias"] = ((cv,), "one"), ((cv,), "b")
            s[f"fire.{j}.proj.weight"], s[f"fire.{j}.proj.bias"] = ((C, m2 * cv), "w"), ((C,), "b")
            s[f"fire.{j}.gate"] = ((C,), "w")
    if fc["enabled"]:
        F_, D = fc["width"], cfg["embedding"]["dim"]
        for name, fan_in in (("q", C), ("summary", C), ("visual_k", cv), ("visual_v", cv), ("text_k", C), ("text_v", C)):
            s[f"fusion.{name}_proj.weight"], s[f"fusion.{name}_proj.bias"] = ((F_, fan_in), "w"), ((F_,), "b")
        s["fusion.gate_proj.weight"], s["fusion.gate_proj.bias"] = ((3 * fc["heads"], C), "w"), ((3 * fc["heads"],), "b")
        s["fusion.out_proj.weight"], s["fusion.out_proj.bias"] = ((D, F_), "w"), ((D,), "b")
    D = cfg["embedding"]["dim"]
    s["head.proj.weight"], s["head.proj.bias"] = ((D, C), "w"), ((D,), "b")
    if cfg["embedding"].get("architecture", "mllm") == "dual":
        s["head.image_proj.weight"], s["head.image_proj.bias"] = ((D, cv), "w"), ((D,), "b")
    return s


def synthetic_batch(cfg, rows, text_len, gen):
    """rows image+text rows: <|im_start|> <image> v.. </image> text.. <emb>, every row the same length."""
    vc = cfg["vision"]
    M = (vc["image_size"] // vc["patch_size"]) ** 2 // cfg["projector"]["merge"] ** 2
    T = 1 + 1 + M + 1 + text_len + 1
    ids = torch.full((rows, T), 8, dtype=torch.int64)
    ids[:, 0], ids[:, 1], ids[:, 2 + M] = 1, 3, 4
    ids[:, 3 + M:3 + M + text_len] = torch.randint(9, cfg["decoder"]["vocab"], (rows, text_len), generator=gen)
    ids[:, -1] = 7
    slots = torch.full((rows, T), -1, dtype=torch.int64)
    slots[:, 2:2 + M] = torch.arange(rows)[:, None] * M + torch.arange(M)[None]
    pool = torch.zeros(rows, T, dtype=torch.uint8)
    pool[:, 2:2 + M] = 1
    text = torch.zeros(rows, T, dtype=torch.uint8)
    text[:, 3 + M:3 + M + text_len] = 1
    pool |= text
    return {
        "pixels": torch.randn(rows, 3, vc["image_size"], vc["image_size"], generator=gen),
        "token_ids": ids, "keep": torch.ones(rows, T, dtype=torch.uint8),
        "positions": torch.arange(T)[None].expand(rows, T).contiguous(), "vision_slot": slots,
        "pool_mask": pool, "text_mask": text, "emb_index": torch.full((rows,), T - 1, dtype=torch.int64),
        "modality": torch.full((rows,), 2, dtype=torch.int64), "image_row": torch.arange(rows),
        "has_image": torch.ones(rows, dtype=torch.uint8),
    }


def blas_info():
    """The BLAS torch was built against (Debian's torch says "generic": reference BLAS, slow matrix products)."""
    found = re.search(r"\bBLAS_INFO=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


def cmd_bench(args):
    torch.set_num_threads(args.threads)
    cfg = load_named_config(args.config)
    gen = torch.Generator().manual_seed(0)
    params = {}
    for name, (shape, kind) in param_shapes(cfg).items():
        t = torch.randn(shape, generator=gen) * 0.02 if kind == "w" else (torch.ones(shape) if kind == "one" else torch.zeros(shape))
        params[name] = t.requires_grad_(True)
    twin = Twin(cfg, params, args.dtype == "bf16", fast=True)
    batch = synthetic_batch(cfg, args.batch, args.text_len, gen)

    def forward_only():
        with torch.no_grad():
            twin.forward(batch)

    def forward_backward():
        for t in params.values():
            t.grad = None
        out = twin.forward(batch)
        twin.parity_loss(out).backward() if args.batch >= 2 else out["embedding"].sum().backward()

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    result = {
        "impl": "torch-twin", "torch": torch.__version__, "config": cfg["name"], "batch": args.batch,
        "seq_len": batch["token_ids"].shape[1], "text_len": args.text_len, "threads": args.threads,
        "dtype": args.dtype, "params": sum(t.numel() for t in params.values()),
        "forward_ms": timed(forward_only), "fwd_bwd_ms": timed(forward_backward),
        "forward_mode": "no_grad", "warmup": args.warmup, "repeats": args.repeats, "blas": blas_info(),
    }
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("forward", help="outputs, parity loss and every parameter's gradient")
    f.add_argument("--weights", required=True, action="append")
    f.add_argument("--batch", required=True, action="append")
    f.add_argument("--out", required=True, action="append")
    f.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    g = sub.add_parser("generate", help="greedy tokens, full recomputation per step")
    g.add_argument("--weights", required=True, action="append")
    g.add_argument("--batch", required=True, action="append")
    g.add_argument("--steps", type=int, default=32)
    g.add_argument("--out", required=True, action="append")
    g.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    e = sub.add_parser("export-hf", help="Hugging Face layout of the vision encoder and decoder (bf16)")
    e.add_argument("--weights", required=True)
    e.add_argument("--out", required=True)
    b = sub.add_parser("bench", help="median forward and forward+backward times, one JSON line")
    b.add_argument("--config", default="tiny")
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    b.add_argument("--text-len", type=int, default=32)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    {"forward": cmd_forward, "generate": cmd_generate, "export-hf": cmd_export_hf, "bench": cmd_bench}[args.cmd](args)


if __name__ == "__main__":
    main()
