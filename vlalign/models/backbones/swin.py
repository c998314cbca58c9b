"""Swin Transformer (Liu et al., ICCV 2021) as a dense backbone, with the official checkpoints' key names.

Segmentation-style, as in the official Swin semantic-segmentation code and LAVT/LGFormer: any input size
(each stage pads to a multiple of the window), the shifted-window mask is built per input size in `forward`,
and each stage output goes through its own LayerNorm `norm{i}`. The classification checkpoints
(`swin_base_patch4_window12_384_22k.pth`, ...) load strictly through `load_official_swin`, which explains
every key that differs (see `SWIN_TOLERATED`) and interpolates relative-position tables to another window.

Layout inside the encoder is channels-last, `(B, H, W, C)`; the outputs are `(B, C, H, W)`.
Order of the file: blocks, model, checkpoint filter, builders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlalign.models.loading import LoadReport, load_strict, read_state_dict

__all__ = ["SwinTransformer", "load_official_swin", "SWIN_TOLERATED", "SWIN_BUILDERS", "swin_tiny",
           "swin_small", "swin_base", "swin_large", "DropPath"]

Fuse = Callable[[int, Tensor], Tensor]

# Additive logit for token pairs from different regions of a shifted window. The official code uses -100,
# whose exp (~4e-44) is a *denormal* float: CPU matmuls touching it run >10x slower (docs/performance.md).
# exp(-1e4) underflows to exactly 0 in fp32/fp16/bf16, and -1e4 still fits in fp16, so masked pairs get
# exactly zero weight without flush-to-zero. No row is fully masked (a token always sees its own region).
MASK_VALUE = -1e4

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability p (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def relative_position_index(window: int) -> Tensor:
    """(N, N) long, N = window**2: index into the ((2w-1)**2, heads) bias table for every token pair."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2) in [0, 2w-2]
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) with H, W multiples of `window` -> (B, nW, N, C), windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // window) * (W // window), window * window, C)


def window_reverse(x: Tensor, window: int, H: int, W: int) -> Tensor:
    """(B, nW, N, C) -> (B, H, W, C), the inverse of `window_partition`."""
    B, C = x.shape[0], x.shape[-1]
    x = x.view(B, H // window, W // window, window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def shifted_window_mask(H: int, W: int, window: int, shift: int, device: torch.device) -> Tensor:
    """(nW, 1, N, N) additive mask (0 or MASK_VALUE) for a (H, W) padded map rolled by -shift.

    After the cyclic roll, the last `window` rows/columns mix tokens that were far apart in the image; label
    the three bands of rows and of columns (0: untouched, 1: rolled in from the image, 2: wrapped around) and
    let a token attend only to tokens with the same (row band, column band) label.
    """
    def bands(n: int) -> Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - window).long() + (i >= n - shift).long()

    label = bands(H)[:, None] * 3 + bands(W)[None, :]  # (H, W)
    win = window_partition(label[None, :, :, None], window)[0, :, :, 0]  # (nW, N)
    differs = win[:, None, :] != win[:, :, None]  # (nW, N, N)
    return torch.zeros(differs.shape, device=device).masked_fill_(differs, MASK_VALUE)[:, None]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window with a learned relative-position bias."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Persistent because the official checkpoints store it (it is recomputed, never learned).
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=True)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, nW, N, C); mask (nW, 1, N, N) additive or None -> (B, nW, N, C)."""
        B, nW, N, C = x.shape
        nH = self.num_heads
        qkv = self.qkv(x).view(B, nW, N, 3, nH, C // nH).permute(3, 0, 1, 4, 2, 5)  # (3, B, nW, nH, N, hd)
        idx = self.relative_position_index.view(-1)
        bias = self.relative_position_bias_table[idx].view(N, N, -1).permute(2, 0, 1)  # (nH, N, N)
        # One batched SDPA call over all windows, on 4-D tensors (ONNX export accepts no other rank). The
        # windows are folded where the bias broadcasts without a per-sample copy: into the batch when the
        # bias is per head only, into the heads when the shift mask makes it per (window, head).
        if mask is None:
            q, k, v = qkv.reshape(3, B * nW, nH, N, -1).unbind(0)  # each (B*nW, nH, N, hd)
        else:
            bias = (bias + mask).reshape(nW * nH, N, N)  # (nW, 1, N, N) + (nH, N, N): per window and head
            q, k, v = qkv.reshape(3, B, nW * nH, N, -1).unbind(0)  # each (B, nW*nH, N, hd)
        # SDPA scales by hd**-0.5 as the official code does.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.reshape(B, nW, nH, N, -1).transpose(2, 3).reshape(B, nW, N, C))


class SwinBlock(nn.Module):
    """(Shifted-)window attention + MLP, pre-norm residuals; pads the map to window multiples."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential()  # named children fc1/act/fc2 give the official keys mlp.fc1.*, mlp.fc2.*
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, H, W, C); mask from `shifted_window_mask` for the padded size (shifted blocks only)."""
        B, H, W, C = x.shape
        ws = self.window
        y = self.norm1(x)
        # Pad after the norm (bottom/right) like the official segmentation code: padded tokens are zeros.
        y = F.pad(y, (0, 0, 0, (-W) % ws, 0, (-H) % ws))
        Hp, Wp = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), mask if self.shift else None), ws, Hp, Wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y[:, :H, :W])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> concat (4C) -> LayerNorm -> Linear to 2C: halves H and W (odd sizes padded)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        # The order (row offset, column offset) = (0,0), (1,0), (0,1), (1,1) is what the weights expect.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """`depth` blocks alternating regular and shifted windows; `downsample` is applied by the caller."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 drop_paths: list[float], downsample: bool):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if j % 2 == 0 else window // 2, mlp_ratio, drop_paths[j])
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C); the shifted-window mask is built once per stage and input size."""
        ws = self.window
        Hp, Wp = -(-x.shape[1] // ws) * ws, -(-x.shape[2] // ws) * ws
        mask = shifted_window_mask(Hp, Wp, ws, ws // 2, x.device) if len(self.blocks) > 1 else None
        for block in self.blocks:
            x = block(x, mask)
        return x


class SwinTransformer(nn.Module):
    """Dense Swin backbone: `forward(image) -> [stride 4, 8, 16, 32 features]` (BxCxHxW each).

    `image` is Bx3xHxW in [0, 1] (any H, W); it is normalised here with the ImageNet `pixel_mean`/`pixel_std`
    buffers, so callers pass raw [0, 1] images.
    """

    strides = (4, 8, 16, 32)

    def __init__(self, embed_dim: int = 96, depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.3):
        super().__init__()
        self.window_size = window_size
        self.out_channels = tuple(embed_dim * 2**i for i in range(len(depths)))
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.patch_embed = nn.Module()  # a plain holder: keys read patch_embed.proj.*, patch_embed.norm.*
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, kernel_size=4, stride=4)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        n = sum(depths)  # deeper blocks drop more: linear in the block index (a plain list works on "meta")
        rates = [drop_path_rate * j / max(n - 1, 1) for j in range(n)]
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(SwinStage(self.out_channels[i], depth, heads, window_size, mlp_ratio,
                                         rates[start:start + depth], downsample=i < len(depths) - 1))
        for i, ch in enumerate(self.out_channels):
            self.add_module(f"norm{i}", nn.LayerNorm(ch))
        self.apply(_init_weights)

    def forward(self, image: Tensor, fuse: Fuse | None = None) -> list[Tensor]:
        """image Bx3xHxW in [0,1] -> 4 maps (B, C_i, ceil(H/s_i), ceil(W/s_i)) for s_i in 4, 8, 16, 32.

        fuse(stage_index, feature BxCxHxW) -> BxCxHxW is called on each stage's raw output (before its norm
        and before patch merging); what it returns is what the next stage consumes and what `norm{i}` outputs.
        """
        x = (image - self.pixel_mean) / self.pixel_std
        x = F.pad(x, (0, (-x.shape[3]) % 4, 0, (-x.shape[2]) % 4))
        x = self.patch_embed.norm(self.patch_embed.proj(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, C)
        outs = []
        for i, stage in enumerate(self.layers):
            x = stage(x)
            if fuse is not None:
                feature = x.permute(0, 3, 1, 2)  # (B, C, H, W) view, as the contract promises
                fused = fuse(i, feature)
                if fused.shape != feature.shape:
                    raise ValueError(f"fuse({i}, ...) returned {tuple(fused.shape)}, "
                                     f"expected {tuple(feature.shape)}")
                x = fused.permute(0, 2, 3, 1)
            outs.append(getattr(self, f"norm{i}")(x).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x)
        return outs


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# Differences between an official classification checkpoint and this backbone, each with its reason.
SWIN_TOLERATED: dict[str, str] = {
    r"head\.(weight|bias)": "ImageNet classification head, unused by a dense backbone",
    r"norm\.(weight|bias)": "final norm of the classifier; the dense backbone has per-stage norm0..3",
    r"norm[0-3]\.(weight|bias)": "per-stage output norms of the dense backbone, absent from classification "
                                 "checkpoints; they start as identity (weight 1, bias 0)",
    r"layers\.\d+\.blocks\.\d+\.attn_mask": "shifted-window mask for one fixed input size; rebuilt per input",
}


def swin_checkpoint_filter(state_dict: Mapping[str, Tensor], model: SwinTransformer) -> dict[str, Tensor]:
    """Adapt an official checkpoint to `model`'s window size: bicubic-resize bias tables, reuse our indices.

    As in the official fine-tuning code, a ((2w-1)**2, heads) table is viewed as a (heads, 2w-1, 2w-1) image
    and resized bicubically; the relative_position_index is a pure function of the window: ours replaces it.
    """
    own = model.state_dict()
    out = dict(state_dict)
    for key, value in state_dict.items():
        if key not in own or value.shape == own[key].shape:
            continue
        if key.endswith("relative_position_bias_table") and value.shape[1] == own[key].shape[1]:
            s_old, s_new = round(value.shape[0] ** 0.5), round(own[key].shape[0] ** 0.5)
            grid = value.float().T.reshape(1, -1, s_old, s_old)  # (1, heads, 2w-1, 2w-1)
            grid = F.interpolate(grid, size=(s_new, s_new), mode="bicubic", align_corners=False)
            out[key] = grid.reshape(-1, s_new * s_new).T.to(value.dtype)
        elif key.endswith("relative_position_index"):
            out[key] = own[key]
    return out


def load_official_swin(model: SwinTransformer, path: str | Path) -> LoadReport:
    """Strictly load an official checkpoint (e.g. swin_base_patch4_window12_384_22k.pth, {"model": ...})."""
    state_dict = swin_checkpoint_filter(read_state_dict(path), model)
    return load_strict(model, state_dict, tolerated=SWIN_TOLERATED, source=str(path))


def _build(embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...], window_size: int,
           drop_path_rate: float, pretrained: str | Path | None) -> SwinTransformer:
    model = SwinTransformer(embed_dim, depths, num_heads, window_size=window_size,
                            drop_path_rate=drop_path_rate)
    if pretrained is not None:
        load_official_swin(model, pretrained)
    return model


def swin_tiny(
    window_size: int = 7, drop_path_rate: float = 0.3, pretrained: str | Path | None = None
) -> SwinTransformer:
    return _build(96, (2, 2, 6, 2), (3, 6, 12, 24), window_size, drop_path_rate, pretrained)


def swin_small(
    window_size: int = 7, drop_path_rate: float = 0.3, pretrained: str | Path | None = None
) -> SwinTransformer:
    return _build(96, (2, 2, 18, 2), (3, 6, 12, 24), window_size, drop_path_rate, pretrained)


def swin_base(
    window_size: int = 7, drop_path_rate: float = 0.3, pretrained: str | Path | None = None
) -> SwinTransformer:
    return _build(128, (2, 2, 18, 2), (4, 8, 16, 32), window_size, drop_path_rate, pretrained)


def swin_large(
    window_size: int = 7, drop_path_rate: float = 0.3, pretrained: str | Path | None = None
) -> SwinTransformer:
    return _build(192, (2, 2, 18, 2), (6, 12, 24, 48), window_size, drop_path_rate, pretrained)


SWIN_BUILDERS: dict[str, Callable[..., SwinTransformer]] = {
    "swin_tiny": swin_tiny,
    "swin_small": swin_small,
    "swin_base": swin_base,
    "swin_large": swin_large,
}
